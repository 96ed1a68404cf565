// Per-client usage and waits of one route, for metrics and status (ids are hashes).
import { ClientGoneError } from '../errors'

/** Per-client statistics kept at most for this many clients per route (oldest dropped first). */
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
  private readonly byClient = new Map<string, ClientStats>()

  /** A client's stats in a bucket: those kept from before, or new ones (the oldest tracked is then dropped beyond the bound). */
  of (bucket: string, client: string, weight: number): ClientStats {
    const key = `${bucket}\n${client}`
    let stats = this.byClient.get(key)
    if (stats === undefined) {
      stats = { bucket, client, weight, admitted: 0, units: 0, rejected: 0, cancelled: 0, waitedMsTotal: 0, waitedMsMax: 0, held: 0, reserved: 0 }
      this.byClient.set(key, stats)
      if (this.byClient.size > MAX_TRACKED_CLIENTS) this.byClient.delete(this.byClient.keys().next().value as string)
    }
    return stats
  }

  /** Copies of every client's stats. */
  all (): ClientStats[] {
    return [...this.byClient.values()].map((s) => ({ ...s }))
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
