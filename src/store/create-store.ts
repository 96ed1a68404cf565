import type { SluiceConfig } from '../config/schema'
import type { BucketStore } from './bucket-store'
import { MemoryStore } from './memory-store'
import type { TopologyLog } from './redis-connection'
import { RedisStore } from './redis-store'

/** How long start-up waits for Redis before listening anyway (ms). */
export const STORE_CONNECT_WAIT_MS = 5000

/**
 * The memory store without --redis; otherwise a Redis store, connected when Redis answers within
 * STORE_CONNECT_WAIT_MS. A sidecar may start before its Redis: then Sluice listens anyway, keeps
 * connecting in the background, and /_sluice/ready says so. Which deployment the URL names (one
 * server, a cluster, Sentinels) and what a redis:// node turns out to be is redis-connection.ts's;
 * `log` hears of a topology error once (a one-server client answered MOVED).
 */
export async function createStore (config: SluiceConfig, log?: TopologyLog): Promise<BucketStore> {
  if (config.redis === undefined) return new MemoryStore()
  const store = new RedisStore({ url: config.redis, keyPrefix: config.keyPrefix, log })
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    store.connect().catch(() => {}),
    new Promise<void>((resolve) => { timer = setTimeout(resolve, STORE_CONNECT_WAIT_MS) })
  ])
  clearTimeout(timer)
  return store
}
