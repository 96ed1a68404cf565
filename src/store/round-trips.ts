// How long this instance's reservations take from send to reply, kept from the reservations
// themselves (no probe of its own): what a fair queue must book ahead to keep the budget busy when
// the store is far away (fastest and median; fair-pacing.ts), and how long an answer may take (a high quantile).

/** Round trips kept. */
const KEEP = 32
/** A round trip older than this no longer counts (ms): the route to the store changes. */
const MAX_AGE_MS = 10_000

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

  /** The `p` quantile (0..1) of the recent round trips (ms), or undefined when none is recent. */
  quantile (now: number, p: number): number | undefined {
    const recent: number[] = []
    for (let i = 0; i < this.ms.length; i++) if (now - this.at[i] <= MAX_AGE_MS) recent.push(this.ms[i])
    if (recent.length === 0) return undefined
    recent.sort((a, b) => a - b)
    return recent[Math.min(recent.length - 1, Math.floor(recent.length * p))]
  }
}
