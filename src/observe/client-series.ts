// Per-client metric series, bounded: any caller can name a new client (X-Sluice-Client, a new
// credential), so per route at most MAX_CLIENT_SERIES clients get series of their own; the rest are
// counted under one `other` series. A client keeps its series while it is active; one idle for the
// idle time loses it (the series is removed), and at each rebalance a client counted under `other`
// that was clearly more active than the least active labelled one takes that one's place. A request
// is counted once, under the label its client has at that moment, so `other` never goes down and
// the sum over a route's clients stays every request of the route.
import type { Counter } from 'prom-client'
import type { QueueSource } from './bucket-tracker'
import type { ClientUsage } from './status'

/** Clients with series of their own, per route. */
export const MAX_CLIENT_SERIES = 50
/** The label of every client without series of its own. */
export const OTHER_CLIENT = 'other'
/** Clients counted under `other` whose activity is remembered for promotion, per route (least recent forgotten first). */
const MAX_CANDIDATES = 4 * MAX_CLIENT_SERIES
/** Clients are compared over this long at most (or the idle time, when shorter), ms. */
const REBALANCE_MS = 30_000
const OUTCOMES = ['forwarded', 'rejected', 'cancelled'] as const

interface Activity { lastSeenMs: number, recent: number }

interface RouteClients {
  labelled: Map<string, Activity>
  /** Unlabelled clients, least recently seen first. */
  candidates: Map<string, Activity>
}

export class ClientSeries {
  private readonly routes = new Map<string, RouteClients>()
  private lastRebalance = Date.now()

  constructor (
    private readonly requests: Counter<'route' | 'client' | 'outcome'>,
    private readonly wait: Counter<'route' | 'client'>,
    private readonly idleMs: number,
    private readonly max = MAX_CLIENT_SERIES
  ) {}

  /** The client label to count a request of `client` under now: its own id, or `other`. */
  label (route: string, client: string, now = Date.now()): string {
    let r = this.routes.get(route)
    if (r === undefined) {
      r = { labelled: new Map(), candidates: new Map() }
      this.routes.set(route, r)
    }
    const own = r.labelled.get(client)
    if (own !== undefined) {
      own.lastSeenMs = now
      own.recent++
      return client
    }
    if (r.labelled.size < this.max) {
      r.labelled.set(client, { lastSeenMs: now, recent: 1 })
      r.candidates.delete(client)
      return client
    }
    const seen = r.candidates.get(client)
    r.candidates.delete(client)
    r.candidates.set(client, { lastSeenMs: now, recent: (seen?.recent ?? 0) + 1 })
    if (r.candidates.size > MAX_CANDIDATES) r.candidates.delete(r.candidates.keys().next().value as string)
    return OTHER_CLIENT
  }

  /** Drop idle clients (and their series) and, once per rebalance period, promote clearly busier ones. */
  sweep (now = Date.now()): void {
    const rebalance = now - this.lastRebalance >= Math.min(REBALANCE_MS, this.idleMs)
    if (rebalance) this.lastRebalance = now
    for (const [route, r] of this.routes) {
      for (const [client, a] of r.labelled) if (now - a.lastSeenMs > this.idleMs) this.drop(route, r, client)
      for (const [client, a] of r.candidates) if (now - a.lastSeenMs > this.idleMs) r.candidates.delete(client)
      if (rebalance) this.rebalance(route, r)
      if (r.labelled.size === 0 && r.candidates.size === 0) this.routes.delete(route)
    }
  }

  /** Clients with series of their own, and clients remembered under `other`, over all routes. */
  sizes (): { labelled: number, candidates: number } {
    let labelled = 0
    let candidates = 0
    for (const r of this.routes.values()) {
      labelled += r.labelled.size
      candidates += r.candidates.size
    }
    return { labelled, candidates }
  }

  /** Fill free places with the busiest candidates; swap a candidate in when it was over twice as busy. */
  private rebalance (route: string, r: RouteClients): void {
    const busiest = [...r.candidates].sort((a, b) => b[1].recent - a[1].recent)
    for (const [client, a] of busiest) {
      if (r.labelled.size >= this.max) {
        const [weakest, w] = [...r.labelled].reduce((min, e) => e[1].recent < min[1].recent ? e : min)
        if (a.recent <= 2 * w.recent) break
        this.drop(route, r, weakest)
      }
      r.candidates.delete(client)
      r.labelled.set(client, a)
    }
    for (const a of r.labelled.values()) a.recent = 0
    for (const a of r.candidates.values()) a.recent = 0
  }

  private drop (route: string, r: RouteClients, client: string): void {
    r.labelled.delete(client)
    for (const outcome of OUTCOMES) this.requests.remove({ route, client, outcome })
    this.wait.remove({ route, client })
  }
}

/** The rows of each route's `max` most active clients, the others summed into one row named `other`. */
export function boundedRows<T extends { route: string, client: string }> (rows: T[], weight: (row: T) => number, merge: (into: T, row: T) => void, max = MAX_CLIENT_SERIES): T[] {
  const byRoute = new Map<string, T[]>()
  for (const row of rows) {
    const list = byRoute.get(row.route)
    if (list === undefined) byRoute.set(row.route, [row])
    else list.push(row)
  }
  const out: T[] = []
  for (const list of byRoute.values()) {
    if (list.length <= max) {
      out.push(...list)
      continue
    }
    list.sort((a, b) => weight(b) - weight(a))
    out.push(...list.slice(0, max))
    const other = { ...list[max], client: OTHER_CLIENT }
    for (const row of list.slice(max + 1)) merge(other, row)
    out.push(other)
  }
  return out
}

/** Usage and waits of the fair-share clients this instance has seen: per route the MAX_CLIENT_SERIES most active, and `other`. */
export function clientUsage (schedulers: ReadonlyMap<string, QueueSource>): ClientUsage[] {
  const rows = [...schedulers].flatMap(([route, s]) => (s.clients?.() ?? []).map((c) => ({
    route,
    bucket: c.bucket,
    client: c.client,
    weight: c.weight,
    admitted: c.admitted,
    units: c.units,
    rejected: c.rejected,
    cancelled: c.cancelled,
    meanWaitMs: c.admitted === 0 ? 0 : Math.round(c.waitedMsTotal / c.admitted),
    maxWaitMs: Math.round(c.waitedMsMax),
    waiting: c.held + c.reserved,
    waitedMsTotal: c.waitedMsTotal
  })))
  const bounded = boundedRows(rows, (r) => r.admitted + r.rejected + r.cancelled + r.waiting, (into, r) => {
    into.admitted += r.admitted
    into.units += r.units
    into.rejected += r.rejected
    into.cancelled += r.cancelled
    into.waiting += r.waiting
    into.waitedMsTotal += r.waitedMsTotal
    into.maxWaitMs = Math.max(into.maxWaitMs, r.maxWaitMs)
    into.meanWaitMs = into.admitted === 0 ? 0 : Math.round(into.waitedMsTotal / into.admitted)
  })
  return bounded.map(({ waitedMsTotal: _, ...row }) => row.client === OTHER_CLIENT ? { ...row, bucket: '', weight: 1 } : row)
}
