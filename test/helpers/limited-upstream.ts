// For the learned-limit tests: POSTs through Sluice, and a loopback upstream that allows `allowed`
// requests in any `windowMs` and answers the rest like Zulip (429, Retry-After: 1), publishing nothing.
import { request } from 'undici'
import type { TestSluice } from './sluice'
import { startUpstream, type TestUpstream } from './upstream'

export async function post (url: string): Promise<number> {
  const res = await request(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"content":"x"}' })
  await res.body.text()
  return res.statusCode
}

/** `n` POSTs at once, round-robin over the instances; their statuses. */
export async function spread (sluices: TestSluice[], path: string, n: number): Promise<number[]> {
  return await Promise.all(Array.from({ length: n }, async (_, i) => await post(`${sluices[i % sluices.length].url}${path}`)))
}

export interface LimitedUpstream extends TestUpstream {
  /** Requests allowed per window; may be changed while running. */
  allowed: number
  /** 429s answered so far. */
  limited: number
}

export async function startLimitedUpstream (allowed: number, windowMs: number): Promise<LimitedUpstream> {
  const accepted: number[] = []
  const state = { allowed, limited: 0 }
  const up = await startUpstream((_req, res) => {
    const now = Date.now()
    while (accepted.length > 0 && accepted[0] <= now - windowMs) accepted.shift()
    if (accepted.length >= state.allowed) {
      state.limited++
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1' }).end('{"result":"error","msg":"API usage exceeded rate limit","code":"RATE_LIMIT_HIT"}')
      return
    }
    accepted.push(now)
    res.setHeader('content-type', 'application/json')
    res.end('{"result":"success"}')
  })
  return Object.assign(state, up)
}
