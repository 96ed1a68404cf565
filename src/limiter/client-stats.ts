// Per-client usage and waits of one route, for metrics and status (ids are hashes).
import { ClientGoneError } from '../errors'

/** Per-client statistics kept at most for this many clients per route (least recently active dropped first). */
const MAX_TRACKED_CLIENTS = 1000

export interface ClientStats {
  bucket: string
  client: string
  weight: number
  /** Requests and units admitted (started). */
  admitted: number
  units: number
  /** Refused (RATE_LIMITED, QUEUE_FULL, QUEUE_TIMEOUT, STORE_UNAVAILABLE) and abandoned while waiting. */
  rejected: number
  cancelled: number
  /** Sum and maximum of the waits of admitted requests, ms. */
  waitedMsTotal: number
  waitedMsMax: number
  /** Requests waiting now: held here, and reserved but not yet started. */
  held: number
  reserved: number
}

export class ClientStatsTable {
  /** Least recently active first: a client's entry moves to the end each time its queue is made. */
  private readonly byClient = new Map<string, { stats: ClientStats, lastSeenMs: number }>()

  /**
   * A client's stats in a bucket: those kept from before, or new ones (the least recently active is
   * then dropped beyond the bound). Called when the client's queue is made, i.e. on its first request
   * after it had nothing waiting.
   */
  of (bucket: string, client: string, weight: number, now = Date.now()): ClientStats {
    const key = `${bucket}\n${client}`
    const known = this.byClient.get(key)
    const stats = known?.stats ?? { bucket, client, weight, admitted: 0, units: 0, rejected: 0, cancelled: 0, waitedMsTotal: 0, waitedMsMax: 0, held: 0, reserved: 0 }
    this.byClient.delete(key)
    this.byClient.set(key, { stats, lastSeenMs: now })
    if (this.byClient.size > MAX_TRACKED_CLIENTS) this.byClient.delete(this.byClient.keys().next().value as string)
    return stats
  }

  /** Forget clients with nothing waiting whose queue was last made more than `idleMs` ago. */
  forgetIdle (now: number, idleMs: number): void {
    for (const [key, e] of this.byClient) {
      if (now - e.lastSeenMs <= idleMs) break // the rest were seen more recently
      if (e.stats.held === 0 && e.stats.reserved === 0) this.byClient.delete(key)
    }
  }

  get size (): number {
    return this.byClient.size
  }

  /** Copies of every client's stats. */
  all (): ClientStats[] {
    return [...this.byClient.values()].map((e) => ({ ...e.stats }))
  }
}

/** Count a started request; returns its whole wait since `arrived` (performance.now ms), ms. */
export function recordAdmitted (stats: ClientStats, cost: number, arrived: number): number {
  const waitedMs = performance.now() - arrived
  stats.admitted++
  stats.units += cost
  stats.waitedMsTotal += waitedMs
  stats.waitedMsMax = Math.max(stats.waitedMsMax, waitedMs)
  return waitedMs
}

/** Count a request that failed: abandoned by its client (cancelled), or refused. */
export function recordFailure (stats: ClientStats, err: unknown): void {
  if (err instanceof ClientGoneError) stats.cancelled++
  else stats.rejected++
}
