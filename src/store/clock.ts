import { performance } from 'node:perf_hooks'

/** Wall-clock time in integer microseconds, monotonic within the process. */
export function nowUs (): number {
  return Math.round(nowMs() * 1000)
}

/** The same clock in (fractional) epoch ms. */
export function nowMs (): number {
  return performance.timeOrigin + performance.now()
}
