// The store as the limiters see it: every reserve, release and pause timed (and its failures
// counted) in the metrics, and every pause told to the observer. Other methods pass through.
import type { BucketStore } from '../store/bucket-store'
import type { SluiceMetrics } from './metrics'

/** The admission path's commands (reserveLimits and its kin: routes with several limits). */
const TIMED = new Set<string | symbol>(['reserve', 'release', 'pause', 'reserveLimits', 'releaseLimit', 'pauseLimit'])

export function timedStore (store: BucketStore, metrics: SluiceMetrics, onPause: (bucket: string, ms: number) => void): BucketStore {
  // Methods are bound once, not on every access (the limiters call several per request); a method
  // replaced on the store is bound anew.
  const bound = new Map<string | symbol, { fn: unknown, method: unknown }>()
  const timedMethod = (fn: (...args: unknown[]) => Promise<unknown>, target: BucketStore, prop: string): unknown => {
    return async (...args: unknown[]): Promise<unknown> => {
      const labels = { store: target.kind, command: prop }
      const end = metrics.storeCommand.startTimer(labels)
      try {
        const result = await fn.apply(target, args)
        if (prop === 'pause') onPause(String(args[0]), Number(result))
        if (prop === 'pauseLimit') onPause(String(args[1]), Number(result))
        return result
      } catch (err) {
        metrics.storeErrors.inc(labels)
        throw err
      } finally {
        end()
      }
    }
  }
  return new Proxy(store, {
    get (target, prop) {
      const value = Reflect.get(target, prop, target) as unknown
      if (typeof value !== 'function') return value
      const known = bound.get(prop)
      if (known?.fn === value) return known.method
      const fn = value as (...args: unknown[]) => Promise<unknown>
      const method = TIMED.has(prop) ? timedMethod(fn, target, prop as string) : fn.bind(target)
      bound.set(prop, { fn: value, method })
      return method
    }
  })
}
