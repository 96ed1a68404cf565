import type { SluiceConfig } from '../config/schema'
import type { BucketStore } from './bucket-store'
import { MemoryStore } from './memory-store'
import { RedisStore } from './redis-store'

/** The memory store without --redis; otherwise a Redis store whose first connection may still be under way. */
export function createStore (config: SluiceConfig): BucketStore {
  if (config.redis === undefined) return new MemoryStore()
  const store = new RedisStore({ url: config.redis, keyPrefix: config.keyPrefix })
  // A sidecar may start before its Redis: keep trying in the background; /_sluice/ready tells.
  store.connect().catch(() => {})
  return store
}
