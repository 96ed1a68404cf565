// What Redis tells every instance on its channels, and who listens here: a lease freed (concurrency
// gate), a bucket paused or its state found lost (pause channel), a limit learned (learned channel).
// One subscriber connection per instance, opened with the first listener; it follows failovers and
// hand-overs (redis-connection.ts).
import type { RedisConnection } from './redis-connection'
import type { RedisKeys } from './redis-keys'

/** Ends a loss announcement on the pause channel ("bucket|generation|lost"; older instances ignore it). */
const LOST_SUFFIX = '|lost'

export class RedisAnnouncements {
  private subscribed = false
  private readonly leaseFreed: Array<(bucket: string) => void> = []
  private readonly paused: Array<(bucket: string, delayMs: number) => void> = []
  private readonly stateLost: Array<(bucket: string, generation: number) => void> = []
  private readonly learned: Array<(bucket: string) => void> = []

  constructor (private readonly connection: RedisConnection, private readonly keys: RedisKeys) {}

  onLeaseFreed (listener: (bucket: string) => void): void {
    this.listen(this.leaseFreed, listener)
  }

  onPause (listener: (bucket: string, delayMs: number) => void): void {
    this.listen(this.paused, listener)
  }

  onStateLost (listener: (bucket: string, generation: number) => void): void {
    this.listen(this.stateLost, listener)
  }

  onLearned (listener: (bucket: string) => void): void {
    this.listen(this.learned, listener)
  }

  private listen<L> (listeners: L[], listener: L): void {
    listeners.push(listener)
    if (this.subscribed) return
    this.subscribed = true
    const { leaseChannel, pauseChannel, learnedChannel } = this.keys
    this.connection.subscribe([leaseChannel, pauseChannel, learnedChannel], (channel, message) => {
      if (channel === leaseChannel) for (const l of this.leaseFreed) l(message)
      else if (channel === learnedChannel) for (const l of this.learned) l(message)
      else if (message.endsWith(LOST_SUFFIX)) this.heardLoss(message.slice(0, -LOST_SUFFIX.length))
      else this.heardPause(message)
    })
  }

  /** "bucket|delay µs" from a pause script (pause-1.lua). */
  private heardPause (message: string): void {
    const bar = message.lastIndexOf('|')
    const delayMs = Number(message.slice(bar + 1)) / 1000
    if (bar > 0 && Number.isFinite(delayMs)) for (const l of this.paused) l(message.slice(0, bar), delayMs)
  }

  /** "bucket|generation" from a reserve script that found the bucket's state lost (includes/generation.lua). */
  private heardLoss (message: string): void {
    const bar = message.lastIndexOf('|')
    const generation = Number(message.slice(bar + 1))
    if (bar > 0 && Number.isFinite(generation)) for (const l of this.stateLost) l(message.slice(0, bar), generation)
  }
}
