// What the emulated API saw: every arrival with its outcome, and every answer that told a client to
// wait. Tests judge a client by this log alone, so it records what a real upstream could observe.

export const OUTCOMES = ['ok', 'limited', 'maintenance', 'flaky-502', 'flaky-503', 'reset'] as const
export type Outcome = typeof OUTCOMES[number]

export interface Arrival {
  /** Index of this arrival in `arrivals` (since start or the last reset()). */
  n: number
  /** Epoch ms (performance.timeOrigin + performance.now()) when the request head arrived. */
  t: number
  method: string
  /** The request target as received, query included. */
  path: string
  /** HTTP status answered; 0 when the connection was reset instead. */
  status: number
  outcome: Outcome
  /** The headers a test needs to tell clients and retries apart, when present. */
  headers: { 'x-sluice-client'?: string, 'x-request-id'?: string }
  /** Request body size in bytes, once fully read (0 until then). */
  bodyBytes: number
}

/** An answer that asked the client to wait (429/403 over the limit, 409 maintenance with Retry-After). */
export interface Pushback {
  /** The arrival that was pushed back. */
  n: number
  status: number
  /** Epoch ms when the answer was sent. */
  sentAt: number
  /** Epoch ms before which the answer asked clients not to come back. */
  retryAt: number
}

export type EmulatorStats = Record<Outcome, number> & { total: number }

export class ArrivalLog {
  arrivals: Arrival[] = []
  pushbacks: Pushback[] = []

  okTimes (): number[] {
    const times: number[] = []
    for (const a of this.arrivals) if (a.outcome === 'ok') times.push(a.t)
    return times
  }

  stats (): EmulatorStats {
    const stats: EmulatorStats = { total: this.arrivals.length, ok: 0, limited: 0, maintenance: 0, 'flaky-502': 0, 'flaky-503': 0, reset: 0 }
    for (const a of this.arrivals) stats[a.outcome]++
    return stats
  }

  /**
   * Arrivals that came after a pushback was sent but before the time it asked for, judged against the
   * most recent pushback sent before each arrival. `graceMs` (default 0) forgives arrivals within that
   * many ms after the pushback was sent: requests already in flight when it left cannot have obeyed it.
   */
  earlyAfterPushback (graceMs = 0): number {
    const pushbacks = [...this.pushbacks].sort((a, b) => a.sentAt - b.sentAt)
    let early = 0
    let next = 0
    let current: Pushback | undefined
    for (const a of this.arrivals) {
      while (next < pushbacks.length && pushbacks[next]!.sentAt < a.t) current = pushbacks[next++]
      if (current !== undefined && a.t < current.retryAt && a.t - current.sentAt > graceMs) early++
    }
    return early
  }

  clear (): void {
    this.arrivals = []
    this.pushbacks = []
  }
}
