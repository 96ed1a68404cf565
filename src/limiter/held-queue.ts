// A request to the fair scheduler, what it resolves to, and one client's queue of those held, per
// priority class.
import type { Priority } from '../config/schema'
import type { CancelSignal } from './cancel'
import type { Admission } from './route-limiter'

export interface FairRequest {
  bucket: string
  /** Hashed client id (client-identity.ts). */
  client: string
  priority: Priority
  /** Units of the budget (cost-rules.ts); for a route with several limits, the most of `costs`. */
  cost: number
  /** A route with several limits: the request's cost in each (cost-rules.ts costsOf). */
  costs?: number[]
  maxWaitMs: number
  signal: CancelSignal
}

export interface FairAdmission extends Admission {
  /** ms held in this instance's fair queue before the reservation was made (part of waitedMs). */
  heldMs: number
}

export interface Held {
  req: FairRequest
  arrived: number
  deadline: number
  /** No longer held in its client's HeldQueue: handed to the limiter, dropped or timed out. */
  done: boolean
  resolve: (admission: FairAdmission) => void
  reject: (err: unknown) => void
  onAbort: () => void
}

/**
 * One client's held requests of one priority class, oldest first. Adding, taking the oldest and
 * dropping any one (a client that left, a deadline) are O(1), and so are the count and the units held:
 * a burst behind a pause can hold thousands, and an array's indexOf/splice and a sum over the queue
 * per arrival would make each arrival cost in proportion to them.
 */
export class HeldQueue {
  private items: Held[] = []
  private head = 0
  /** Requests held. */
  length = 0
  /** Their units (cost). */
  units = 0

  push (held: Held): void {
    this.items.push(held)
    this.added(held)
  }

  /** Back in front of the others (a low-priority probe that did not fit). */
  unshift (held: Held): void {
    if (this.head > 0) this.items[--this.head] = held
    else this.items.unshift(held)
    this.added(held)
  }

  /** The oldest held, if any. */
  first (): Held | undefined {
    while (this.head < this.items.length && this.items[this.head].done) this.head++
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return this.items[this.head]
  }

  /** Drop one (wherever it is); false when it was not held here. Dropped entries are skipped later. */
  remove (held: Held): boolean {
    if (held.done) return false
    held.done = true
    this.length--
    this.units -= held.req.cost
    if (this.length === 0) {
      this.items = []
      this.head = 0
    }
    return true
  }

  private added (held: Held): void {
    held.done = false
    this.length++
    this.units += held.req.cost
  }
}
