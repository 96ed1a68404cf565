// One bucket's fair queues in this instance: its clients in round-robin order, each with its held
// requests per priority class and the units it has reserved ahead, and the bucket's timers.
import type { Priority } from '../config/schema'
import type { ClientStats } from './client-stats'
import { HeldDeadlines } from './held-deadlines'
import { HeldQueue, type Held } from './held-queue'
import { BucketPresence } from './presence-gossip'

export interface ClientQueue {
  id: string
  weight: number
  held: Record<Priority, HeldQueue>
  /** Units reserved and not yet started, per priority class. */
  reserved: Record<Priority, number>
  stats: ClientStats
}

export class FairBucket {
  readonly name: string
  /** In round-robin order: a client served moves to the end. */
  readonly clients = new Map<string, ClientQueue>()
  /** Requests held here. */
  held = 0
  /** Requests handed to the limiter and not yet started. */
  reserved = 0
  /** Deadlines of held requests, served by one timer. */
  readonly deadlines: HeldDeadlines
  /** Low priority: one probe at a time, and none while lowTimer waits for the room the schedule announced. */
  lowProbing = false
  lowTimer: NodeJS.Timeout | undefined
  /** In how many instances each client is active (shared store only; presence-gossip.ts). */
  readonly presence = new BucketPresence()

  /** `onDeadline`: a held request's wait bound has passed (see HeldDeadlines). */
  constructor (name: string, onDeadline: (b: FairBucket) => void) {
    this.name = name
    this.deadlines = new HeldDeadlines(() => onDeadline(this))
  }

  /** A client's queues, made on its first request with the weight and stats `make` gives. */
  client (id: string, make: () => { weight: number, stats: ClientStats }): ClientQueue {
    let c = this.clients.get(id)
    if (c === undefined) {
      const { weight, stats } = make()
      c = { id, weight, held: { high: new HeldQueue(), normal: new HeldQueue(), low: new HeldQueue() }, reserved: { high: 0, normal: 0, low: 0 }, stats }
      this.clients.set(id, c)
    }
    return c
  }

  /** The client was served: it moves to the end of the round robin. */
  toBack (c: ClientQueue): void {
    this.clients.delete(c.id)
    this.clients.set(c.id, c)
  }

  /** Units of this client ahead of a new request of `priority`: queued here, or reserved and not started. */
  unitsAhead (c: ClientQueue, priority: Priority): number {
    let units = 0
    for (const p of ['high', 'normal', 'low'] as const) {
      units += c.reserved[p] + c.held[p].units
      if (p === priority) break
    }
    return units
  }

  /** A client's look-ahead in this instance (`units` for weight 1): its share of it when it is active in several. */
  lookahead (c: ClientQueue, units: number): number {
    return Math.max(1, Math.round(units * c.weight / this.presence.instancesOf(c.id)))
  }

  mayReserve (c: ClientQueue, p: Priority, cost: number, units: number): boolean {
    return c.reserved[p] === 0 || c.reserved[p] + cost <= this.lookahead(c, units)
  }

  /** Hold a request in its client's queue. */
  hold (c: ClientQueue, held: Held, front = false): void {
    if (front) c.held[held.req.priority].unshift(held)
    else c.held[held.req.priority].push(held)
    this.held++
    held.req.signal.addEventListener('abort', held.onAbort, { once: true })
  }

  /** No longer held (handed on, dropped or timed out). */
  unhold (c: ClientQueue, held: Held): void {
    held.req.signal.removeEventListener('abort', held.onAbort)
    if (c.held[held.req.priority].remove(held)) this.held--
  }

  /** Forget a client that has nothing held or reserved; true when nothing is left in the bucket. */
  tidy (c: ClientQueue): boolean {
    c.stats.held = c.held.high.length + c.held.normal.length + c.held.low.length
    c.stats.reserved = c.reserved.high + c.reserved.normal + c.reserved.low
    if (c.stats.held === 0 && c.stats.reserved === 0 && this.clients.get(c.id) === c) this.clients.delete(c.id)
    return this.clients.size === 0 && this.held === 0 && this.reserved === 0
  }

  close (): void {
    this.deadlines.close()
    if (this.lowTimer !== undefined) clearTimeout(this.lowTimer)
  }
}
