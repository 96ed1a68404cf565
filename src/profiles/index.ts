// The profile registry. Adding an API: write its module, add it here and its name to PROFILE_NAMES.

import { generic } from './generic'
import { github } from './github'
import type { Profile, ProfileName } from './profile'
import { testmo } from './testmo'
import { testrail } from './testrail'
import { zulip } from './zulip'

export type { NativeError, ParsedError, Profile, ProfileName, Pushback, UpstreamBody, UpstreamNative } from './profile'
export { PROFILE_NAMES } from './profile'

const PROFILES: Readonly<Record<ProfileName, Profile>> = { generic, testrail, testmo, zulip, github }

export function isProfileName (value: unknown): value is ProfileName {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(PROFILES, value)
}

/** The profile of that name; `generic` for a name that is not one (config validates names first). */
export function getProfile (name: ProfileName): Profile {
  return isProfileName(name) ? PROFILES[name] : generic
}
