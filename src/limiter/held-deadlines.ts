// The deadlines of one bucket's held requests: a min-heap and one timer, armed for the earliest.
import type { Held } from './held-queue'
import { MinHeap } from './min-heap'

export class HeldDeadlines {
  private readonly heap = new MinHeap<Held>((held) => held.deadline)
  private readonly onDue: () => void
  private timer: NodeJS.Timeout | undefined
  /** When the timer fires (performance.now ms; Infinity: not armed). */
  private at = Infinity

  /** `onDue`: the earliest deadline has passed (take the due ones with takeDue, then arm again). */
  constructor (onDue: () => void) {
    this.onDue = onDue
  }

  watch (held: Held): void {
    this.heap.push(held)
    this.arm()
  }

  /** The next held request whose deadline is `now` or earlier (those no longer held are dropped). */
  takeDue (now: number): Held | undefined {
    for (let top = this.heap.peek(); top !== undefined; top = this.heap.peek()) {
      if (!top.done && top.deadline > now) return undefined
      this.heap.pop()
      if (!top.done) return top
    }
    return undefined
  }

  /** The timer for the earliest deadline still held (none when nothing is). */
  arm (): void {
    for (let top = this.heap.peek(); top?.done === true; top = this.heap.peek()) this.heap.pop()
    const next = this.heap.peek()?.deadline ?? Infinity
    if (next === this.at) return
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    this.at = next
    if (next === Infinity) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.at = Infinity
      this.onDue()
    }, Math.max(0, next - performance.now()) + 1)
  }

  close (): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
  }
}
