// What status reads of the budget from the store: one read-only script per bucket, or per limit of a
// route with several (limit-set.ts), never on the admission path, and bounded per status.
import type { RouteLimiter } from '../limiter/route-limiter'
import { isTeamBoard, type BucketPeek, type BucketStore } from '../store/bucket-store'

/**
 * Store reads per status, the most recently used buckets first (with key: header:… there may be
 * hundreds): the others show remaining as unknown (null).
 */
export const MAX_PEEKS = 50

/**
 * Each of `buckets`' state in the store (an array, one per limit, for a route with several), for the
 * first of `recent` (most recently used first) while their reads stay within MAX_PEEKS; undefined for
 * the others, and for a bucket whose read failed.
 */
export async function peekBuckets (store: BucketStore, buckets: string[], recent: string[], limiterOf: (bucket: string) => RouteLimiter | undefined): Promise<Array<BucketPeek | BucketPeek[] | undefined>> {
  const board = isTeamBoard(store) ? store : undefined
  if (board === undefined) return []
  const peeked = new Set<string>()
  let reads = 0
  for (const bucket of recent) {
    const limiter = limiterOf(bucket)
    if (limiter === undefined) continue
    reads += limiter.limits?.names.length ?? 1
    if (reads > MAX_PEEKS) break
    peeked.add(bucket)
  }
  return await Promise.all(buckets.map(async (bucket): Promise<BucketPeek | BucketPeek[] | undefined> => {
    const limiter = limiterOf(bucket)
    if (limiter === undefined || !peeked.has(bucket)) return undefined
    if (limiter.limits !== undefined) return await limiter.limits.peek(bucket).catch(() => undefined)
    return await board.peek(bucket, limiter.policy).catch(() => undefined)
  }))
}
