// Every Redis key and channel name Sluice uses, in one place. `{…}` is a hash tag: the keys one
// script touches share it, so they stay in one Redis Cluster slot.

export interface RedisKeys {
  /** A bucket's key: `<prefix>{<bucket>}:<part>` (tb, tb-margin, sw, sw-floor, sw-margin, pause, gen, leases, presence, learned, answers). */
  bucket: (bucket: string, part: string) => string
  /** A limit of a route with several: `<prefix>{<tag>}:<state>:<part>`, or `<prefix>{<tag>}:<part>` for state ''. */
  limit: (ref: { tag: string, state: string }, part: string) => string
  /** The team's keys: `<prefix>{instances}:<part>` (live, snapshots; ready: the readiness probe's write). */
  team: (part: string) => string
  /** Channel on which a freed concurrency slot is announced. */
  leaseChannel: string
  /** Channel on which a bucket's pause is announced. */
  pauseChannel: string
  /** Channel on which a change of a bucket's learned limit is announced (learn-limit-1.lua). */
  learnedChannel: string
}

export function redisKeys (prefix: string): RedisKeys {
  return {
    bucket: (bucket, part) => `${prefix}{${bucket}}:${part}`,
    limit: (ref, part) => ref.state === '' ? `${prefix}{${ref.tag}}:${part}` : `${prefix}{${ref.tag}}:${ref.state}:${part}`,
    team: (part) => `${prefix}{instances}:${part}`,
    leaseChannel: `${prefix}lease-freed`,
    pauseChannel: `${prefix}paused`,
    learnedChannel: `${prefix}learned`
  }
}
