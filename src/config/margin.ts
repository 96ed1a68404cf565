// The route field `margin`: a duration (the cap of the adaptive margin, which is measured on the path),
// `fixed` (the default duration, never adapted) or `<duration> fixed`.
import { ConfigError, describeValue } from '../errors'
import { parseDuration } from './units'

export interface MarginConfig {
  /** The configured margin, ms: the adaptive margin's cap, or the margin itself when fixed. */
  marginMs: number
  /** True: always `marginMs`, as configured (no measuring). */
  marginFixed: boolean
}

export function parseMargin (at: string, value: unknown, defaultMs: number): MarginConfig {
  if (value === undefined) return { marginMs: defaultMs, marginFixed: false }
  if (typeof value === 'string') {
    const text = value.trim()
    if (text === 'fixed') return { marginMs: defaultMs, marginFixed: true }
    if (text.endsWith(' fixed')) return { marginMs: duration(at, text.slice(0, -' fixed'.length).trim()), marginFixed: true }
  }
  return { marginMs: duration(at, value), marginFixed: false }
}

function duration (at: string, value: unknown): number {
  try {
    return parseDuration(value)
  } catch (err) {
    throw new ConfigError(at, `${(err as Error).message} (or "fixed", or "<duration> fixed"; got ${describeValue(value)})`)
  }
}
