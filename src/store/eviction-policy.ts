// A Redis shared with other data may evict keys when it runs out of memory. Every key Sluice writes
// carries a TTL (each script sets PX or PEXPIRE), so under `allkeys-*` and `volatile-*` alike a
// bucket's state may vanish at any moment (volatile-ttl even picks Sluice's short-lived keys first);
// only `noeviction` keeps it. A lost state is noticed and repaired (limiter/state-repair.ts), at the
// cost of a gather and a few round trips; the warning says how to avoid it. Managed Redis services
// often refuse CONFIG: then nothing is known and nothing is said.
import type { Cluster, Redis } from 'ioredis'

/** The policies under which Redis may drop Sluice's keys. */
const EVICTING = /^(allkeys|volatile)-/

/** `maxmemory-policy` of the server `client` is connected to, or undefined when CONFIG is refused. */
export async function evictionPolicy (client: Redis | Cluster): Promise<string | undefined> {
  try {
    const reply = await client.config('GET', 'maxmemory-policy') as string[]
    return reply.length >= 2 ? String(reply[1]) : undefined
  } catch {
    return undefined
  }
}

/** What to tell the operator about `policy`, or undefined when it keeps Sluice's keys. */
export function evictionWarning (policy: string | undefined): string | undefined {
  if (policy === undefined || !EVICTING.test(policy)) return undefined
  return `Redis has maxmemory-policy ${policy}: when it fills up it may evict Sluice's bucket state (every Sluice key has a TTL, so volatile-* policies evict them too). ` +
    'Sluice notices a lost state and records its starts again, but set maxmemory-policy noeviction (or give Sluice a Redis of its own) to keep the shared budget exact'
}

/** Once the client is (or gets) connected, read the policy and call `warn` when it can evict Sluice's keys. */
export function watchEvictionPolicy (client: Redis | Cluster, warn: (fields: Record<string, unknown>, message: string) => void): void {
  const check = (): void => {
    void evictionPolicy(client).then((policy) => {
      const message = evictionWarning(policy)
      if (message !== undefined) warn({ maxmemoryPolicy: policy }, message)
    })
  }
  if (client.status === 'ready') check()
  else client.once('ready', check)
}
