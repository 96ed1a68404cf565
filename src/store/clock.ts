import { performance } from 'node:perf_hooks'

/** Wall-clock time in integer microseconds, monotonic within the process. */
export function nowUs (): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000)
}
