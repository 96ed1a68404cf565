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
  /** The recent round trips, sorted, as of the last note; valid until `sortedUntil` (when the oldest of them ages out). */
  private sorted: number[] | undefined
  private sortedUntil = -Infinity

  /** A reservation sent at `sentAt` was answered at `receivedAt` (performance.now ms). */
  note (sentAt: number, receivedAt: number): void {
    this.ms[this.next] = receivedAt - sentAt
    this.at[this.next] = receivedAt
    this.next = (this.next + 1) % KEEP
    this.sorted = undefined
  }

  /** The `p` quantile (0..1) of the recent round trips (ms), or undefined when none is recent. */
  quantile (now: number, p: number): number | undefined {
    // Read several times per reservation (timeout, pacing, the gather after a lost state): sorted once per note.
    if (this.sorted === undefined || now > this.sortedUntil) this.sort(now)
    const recent = this.sorted as number[]
    if (recent.length === 0) return undefined
    return recent[Math.min(recent.length - 1, Math.floor(recent.length * p))]
  }

  private sort (now: number): void {
    const recent: number[] = []
    let oldest = Infinity
    for (let i = 0; i < this.ms.length; i++) {
      if (now - this.at[i] > MAX_AGE_MS) continue
      recent.push(this.ms[i])
      oldest = Math.min(oldest, this.at[i])
    }
    this.sorted = recent.sort((a, b) => a - b)
    this.sortedUntil = oldest + MAX_AGE_MS
  }
}
