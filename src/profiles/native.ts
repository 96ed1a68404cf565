// Every error body Sluice writes: the envelope, exactly, and beside it the fields the route's API's
// own clients read in that API's error body (Profile.nativeFields), so a native client works through
// Sluice unchanged. Used by every envelope writer (error-reply.ts, upstream-response.ts, client-error.ts).
import type { Envelope } from '../errors'
import { getProfile, isProfileName } from './index'
import type { NativeError, ProfileName, UpstreamNative } from './profile'

/** The envelope plus a profile's native fields; `success` and `error` are always the envelope's. */
export type ErrorBody = Envelope & Record<string, unknown>

export interface NativeContext {
  /** The HTTP status the client gets. */
  status: number
  retryAfterS?: number
  upstream?: UpstreamNative
}

/**
 * The body for `envelope` on a route of `profile` (undefined: no route matched; the generic
 * profile's fields then). Never throws: a profile that fails adds nothing.
 */
export function errorBody (profile: ProfileName | undefined, envelope: Envelope, context: NativeContext): ErrorBody {
  const error: NativeError = { code: envelope.error.code, message: envelope.error.message, status: context.status }
  if (context.retryAfterS !== undefined) error.retryAfterS = context.retryAfterS
  if (context.upstream !== undefined) error.upstream = context.upstream
  let fields: Record<string, unknown> = {}
  try {
    fields = getProfile(isProfileName(profile) ? profile : 'generic').nativeFields(error)
  } catch {}
  const body: ErrorBody = { success: false, error: envelope.error }
  for (const [key, value] of Object.entries(fields)) {
    if (key !== 'success' && key !== 'error' && key !== '__proto__') body[key] = value
  }
  return body
}
