// An open-loop load generator at a fixed rate with microsecond latencies. autocannon records latency in
// whole milliseconds, too coarse for "p99 added under 1 ms", so the half-load comparison uses this.
import { performance } from 'node:perf_hooks'
import { Pool } from 'undici'
import { percentile } from './table'

export interface PacedResult {
  rate: number
  sent: number
  ok: number
  errors: number
  latencyMs: { p50: number, p90: number, p99: number, max: number }
}

export async function pacedLoad (url: string, rate: number, durationS: number, connections = 64): Promise<PacedResult> {
  const target = new URL(url)
  const pool = new Pool(target.origin, { connections, pipelining: 1 })
  const latencies: number[] = []
  let sent = 0
  let ok = 0
  let errors = 0
  const inflight = new Set<Promise<void>>()
  const fire = (): void => {
    sent++
    const t0 = performance.now()
    const p = pool.request({ path: target.pathname, method: 'GET' }).then(async (res) => {
      await res.body.dump()
      if (res.statusCode === 200) {
        ok++
        latencies.push(performance.now() - t0)
      } else {
        errors++
      }
    }, () => { errors++ }).finally(() => inflight.delete(p))
    inflight.add(p)
  }
  const began = performance.now()
  const total = Math.round(rate * durationS)
  await new Promise<void>((resolve) => {
    // Send what is due every millisecond, so the rate holds whatever the timer's granularity.
    const timer = setInterval(() => {
      const due = Math.min(total, Math.floor(((performance.now() - began) * rate) / 1000))
      // eslint-disable-next-line no-unmodified-loop-condition -- changed by another task (a closure), which the rule cannot see
      while (sent < due) fire()
      if (sent >= total) {
        clearInterval(timer)
        resolve()
      }
    }, 1)
  })
  await Promise.all([...inflight])
  await pool.close()
  return {
    rate,
    sent,
    ok,
    errors,
    latencyMs: { p50: percentile(latencies, 50), p90: percentile(latencies, 90), p99: percentile(latencies, 99), max: percentile(latencies, 100) }
  }
}
