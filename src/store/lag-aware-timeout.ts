import { performance } from 'node:perf_hooks'
import { StoreTimeoutError } from '../errors'

/**
 * Reject when `promise` has not settled `ms` after the call, unless the timer itself fired late (the
 * loop was blocked): then the reply may be waiting unread, so the poll phase gets one more turn
 * (setImmediate runs after it) before the command counts as timed out.
 */
export async function withLagAwareTimeout<T> (promise: Promise<T>, ms: number): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    let settled = false
    const armedAt = performance.now()
    const fail = (): void => {
      if (settled) return
      settled = true
      reject(new StoreTimeoutError(`Redis did not answer within ${ms} ms`))
    }
    const timer = setTimeout(() => {
      if (performance.now() - armedAt > ms * 1.5) setImmediate(fail)
      else fail()
    }, ms)
    promise.then((value) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(value)
    }, (err: unknown) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      reject(err)
    })
  })
}
