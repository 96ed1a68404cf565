// Fire N requests at once (one socket each), spread round-robin over the given Sluice URLs, each with its
// own x-request-id so the upstream's arrival log and Sluice's reservations can be joined.
import { performance } from 'node:perf_hooks'
import { Agent, request } from 'undici'

export interface BurstResult {
  statuses: Record<string, number>
  /** ms from the first request sent to the last response received. */
  elapsedMs: number
}

/**
 * `spreadMs` > 0 opens the connections over that many ms instead of in one go: ten thousand connects in
 * one tick overflow the server's listen backlog (511), which a client sees as ECONNRESET.
 */
export async function burst (urls: string[], n: number, idPrefix: string, spreadMs = 0, method: 'GET' | 'POST' = 'GET'): Promise<BurstResult> {
  const agent = new Agent({ connections: null, pipelining: 1, headersTimeout: 180_000, bodyTimeout: 180_000, keepAliveTimeout: 10_000 })
  const statuses: Record<string, number> = {}
  const began = performance.now()
  await Promise.all(Array.from({ length: n }, async (_, i) => {
    if (spreadMs > 0) await new Promise((resolve) => setTimeout(resolve, (i / n) * spreadMs))
    let key: string
    try {
      const post = method === 'POST' ? { method, body: `{"n":${i}}` } : {}
      const headers = { 'x-request-id': `${idPrefix}${i}`, ...(method === 'POST' ? { 'content-type': 'application/json' } : {}) }
      const res = await request(`${urls[i % urls.length]}/items/${i}`, { dispatcher: agent, headers, ...post })
      await res.body.dump()
      key = String(res.statusCode)
    } catch (err) {
      key = (err as NodeJS.ErrnoException).code ?? 'error'
    }
    statuses[key] = (statuses[key] ?? 0) + 1
  }))
  const elapsedMs = performance.now() - began
  await agent.close()
  return { statuses, elapsedMs }
}
