// A request's cancellation (the client left, or shutdown cut its wait short). It does for the limiter
// what AbortController does, without building an EventTarget per request, which is costly on the path
// of a request that waits for nothing.
// An AbortSignal fits CancelSignal too, so callers may pass either.

export interface CancelSignal {
  readonly aborted: boolean
  readonly reason: unknown
  addEventListener (type: 'abort', listener: () => void, options?: { once?: boolean }): void
  removeEventListener (type: 'abort', listener: () => void): void
}

export class Cancel implements CancelSignal {
  aborted = false
  reason: unknown = undefined
  private listeners: Array<() => void> | undefined

  /** The signal to hand to waits: this object itself, as AbortController.signal would be. */
  get signal (): CancelSignal {
    return this
  }

  /** Fires the listeners once, in the order they were added (later calls do nothing). */
  abort (reason: unknown = new Error('This operation was aborted')): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    const listeners = this.listeners
    this.listeners = undefined
    if (listeners === undefined) return
    for (const listener of listeners) {
      try {
        listener()
      } catch (err) {
        // As an EventTarget does: every listener runs, abort() never throws, and a listener's error
        // is not swallowed but reported as an uncaught exception.
        queueMicrotask(() => { throw err })
      }
    }
  }

  /** Listeners fire once in any case; none is added once aborted (as with an AbortSignal). */
  addEventListener (_type: 'abort', listener: () => void): void {
    if (this.aborted) return
    ;(this.listeners ??= []).push(listener)
  }

  removeEventListener (_type: 'abort', listener: () => void): void {
    const listeners = this.listeners
    if (listeners === undefined) return
    const i = listeners.indexOf(listener)
    if (i !== -1) listeners.splice(i, 1)
  }
}

/** Resolves true when the delay passed, false when `signal` fired first (the client left). */
export function sleep (ms: number, signal: CancelSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false)
    const onAbort = (): void => {
      clearTimeout(timer)
      resolve(false)
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve(true)
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
