// Both stores for a contract suite: the embedded one, and one on a test Redis (its own key prefix).
import { MemoryStore } from '../../src/store/memory-store'
import { RedisStore } from '../../src/store/redis-store'

export function bothStores (redis: { url: string, prefix: () => string }): Array<[string, () => Promise<MemoryStore | RedisStore>]> {
  return [
    ['memory', async () => new MemoryStore()],
    ['redis', async () => {
      const store = new RedisStore({ url: redis.url, keyPrefix: redis.prefix() })
      await store.connect()
      return store
    }]
  ]
}
