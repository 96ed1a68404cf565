// Every Redis key and channel name Sluice uses, in one place. `{…}` is a hash tag: the keys one
// script touches share it, so they stay in one Redis Cluster slot.

export interface RedisKeys {
  /** A bucket's key: `<prefix>{<bucket>}:<part>` (tb, sw, sw-floor, pause, gen, leases, presence). */
  bucket: (bucket: string, part: string) => string
  /** The team's keys: `<prefix>{instances}:<part>` (live, snapshots; ready: the readiness probe's write). */
  team: (part: string) => string
  /** Channel on which a freed concurrency slot is announced. */
  leaseChannel: string
  /** Channel on which a bucket's pause is announced. */
  pauseChannel: string
}

export function redisKeys (prefix: string): RedisKeys {
  return {
    bucket: (bucket, part) => `${prefix}{${bucket}}:${part}`,
    team: (part) => `${prefix}{instances}:${part}`,
    leaseChannel: `${prefix}lease-freed`,
    pauseChannel: `${prefix}paused`
  }
}
