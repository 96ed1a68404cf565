// How Redis's clock differs from this process's (another host, or after a failover another server),
// learned from the round trips that read it, for the limiter's lateness check and for recording
// starts made without Redis at their times in Redis's clock.
import { nowMs } from './clock'

/** TIME round trips on each (re)connection to learn Redis's clock. */
const CLOCK_SAMPLES = 3
/** How long the offset from the fastest round trip is kept before any later one replaces it (ms): clocks drift. */
const CLOCK_KEEP_MS = 30_000

export interface ClockOffset {
  /** Redis's clock minus ours, ms. */
  skewMs: number
  /** The round trip the offset was learned from, ms. */
  rttMs: number
}

export class RedisClock {
  private clock: (ClockOffset & { atMs: number }) | undefined

  offset (): ClockOffset | undefined {
    return this.clock
  }

  /**
   * Redis read its clock (`redisMs`) between `sentAt` and `receivedAt` here. Taken as `receivedAt`,
   * the offset is a lower bound: lateness measured with it is never overstated (a distant Redis is
   * not late) and understated by at most the round trip, so the fastest round trip is kept.
   */
  note (redisMs: number, sentAt: number, receivedAt: number): void {
    const rttMs = receivedAt - sentAt
    const c = this.clock
    if (c !== undefined && rttMs > c.rttMs && receivedAt - c.atMs < CLOCK_KEEP_MS) return
    this.clock = { skewMs: redisMs - receivedAt, rttMs, atMs: receivedAt }
  }

  /** A few TIME round trips, before traffic on a new connection (possibly to another server). */
  async sample (time: () => Promise<ReadonlyArray<number | string>>): Promise<void> {
    this.clock = undefined
    for (let i = 0; i < CLOCK_SAMPLES; i++) {
      try {
        const sentAt = nowMs()
        const [s, us] = await time()
        this.note(Number(s) * 1000 + Number(us) / 1000, sentAt, nowMs())
      } catch {
        return
      }
    }
  }
}
