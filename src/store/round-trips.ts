// How long this instance's reservations take from send to reply, kept from the reservations
// themselves (no probe of its own): what a fair queue must book ahead to keep the budget busy
// when the store is far away (fair-pacing.ts).

/** Round trips kept; the figure is a high percentile of them. */
const KEEP = 32
/** A round trip older than this no longer counts (ms): the route to the store changes. */
const MAX_AGE_MS = 10_000
/** Which of the kept round trips is reported: the 90th percentile, so one stall does not double the look-ahead. */
const PERCENTILE = 0.9

export class RoundTrips {
  private readonly ms: number[] = []
  private readonly at: number[] = []
  private next = 0

  /** A reservation sent at `sentAt` was answered at `receivedAt` (performance.now ms). */
  note (sentAt: number, receivedAt: number): void {
    this.ms[this.next] = receivedAt - sentAt
    this.at[this.next] = receivedAt
    this.next = (this.next + 1) % KEEP
  }

  /** The 90th percentile of the recent round trips (ms), or undefined when none is recent. */
  high (now: number): number | undefined {
    const recent: number[] = []
    for (let i = 0; i < this.ms.length; i++) if (now - this.at[i] <= MAX_AGE_MS) recent.push(this.ms[i])
    if (recent.length === 0) return undefined
    recent.sort((a, b) => a - b)
    return recent[Math.min(recent.length - 1, Math.floor(recent.length * PERCENTILE))]
  }
}
