// The demo's client: a CI job posting its test results as fast as it can, the way a plain script
// does it. Each post is sent once; any answer other than 2xx (a 429 included) is a failed post.
import { Pool } from 'undici'

export interface BurstOptions {
  /** Base URLs to post to; request i goes to targets[i % targets.length] (two Sluice instances split the job). */
  targets: string[]
  requests: number
  concurrency: number
  /** Longest the client waits for an answer, in ms (a request delayed by Sluice is answered late, not lost). */
  answerTimeoutMs: number
  /** Called after every answer (or transport error). */
  onAnswer?: (tally: BurstTally) => void
}

export interface BurstTally {
  done: number
  ok: number
  failed: number
}

export interface BurstResult extends BurstTally {
  sent: number
  /** Answers by HTTP status; transport errors count under 0. */
  statuses: Record<number, number>
  durationMs: number
}

/** A TestRail add_result_for_case call for request `i` of the job: run 1, cases from 1001 on. */
export function resultPost (i: number): { path: string, body: string } {
  const passed = i % 7 !== 3
  return {
    path: `/index.php?/api/v2/add_result_for_case/1/${1001 + i}`,
    body: JSON.stringify({
      status_id: passed ? 1 : 5,
      comment: passed ? 'passed in CI' : 'assertion failed: expected 200, got 500',
      elapsed: `${1 + (i % 50)}s`,
      version: 'ci-build-4711'
    })
  }
}

export async function runBurst (options: BurstOptions): Promise<BurstResult> {
  const { targets, requests, concurrency } = options
  const pools = targets.map((url) => new Pool(url, {
    connections: Math.ceil(concurrency / targets.length) + 1,
    headersTimeout: options.answerTimeoutMs,
    bodyTimeout: options.answerTimeoutMs
  }))
  const statuses: Record<number, number> = {}
  const tally: BurstTally = { done: 0, ok: 0, failed: 0 }
  let next = 0
  const began = performance.now()

  async function post (i: number): Promise<void> {
    const { path, body } = resultPost(i)
    let status = 0
    try {
      const res = await pools[i % pools.length]!.request({
        method: 'POST',
        path,
        headers: { 'content-type': 'application/json', 'x-request-id': `demo-${i}` },
        body
      })
      status = res.statusCode
      await res.body.dump()
    } catch {
      status = 0
    }
    statuses[status] = (statuses[status] ?? 0) + 1
    tally.done++
    if (status >= 200 && status < 300) tally.ok++
    else tally.failed++
    options.onAnswer?.(tally)
  }

  async function worker (): Promise<void> {
    while (next < requests) await post(next++)
  }

  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, requests) }, worker))
  } finally {
    await Promise.all(pools.map(async (p) => await p.close()))
  }
  return { ...tally, sent: next, statuses, durationMs: performance.now() - began }
}
