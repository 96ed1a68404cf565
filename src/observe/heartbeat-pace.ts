// When an instance publishes its heartbeat: every busyMs while it has traffic (a request in the last
// holdMs, one waiting or in flight) or someone watches (a dashboard stream, a status read in the
// last holdMs), every idleMs otherwise. Each beat's TTL is the time until the next beat plus the same
// grace (ttlMs − busyMs), so an instance that dies leaves the team within its pace plus the grace,
// busy or idle, and an idle one that is alive never drops out between its slower beats.
export interface PaceOptions {
  busyMs: number
  idleMs: number
  /** TTL of a beat at the busy pace. */
  ttlMs: number
  /** Traffic or a status read keeps the busy pace this long. */
  holdMs: number
}

export class HeartbeatPace {
  private timer: NodeJS.Timeout | undefined
  /** When the next beat is due (Date.now ms); Infinity while stopped. */
  private nextAt = Infinity
  private lastBeatAt = 0
  private lastActivityAt = 0
  private watchedUntil = 0
  private running = false
  /** The next beat is at the idle pace (activity brings it forward). */
  private slow = false

  /** `beat`: publish now; `busy`: whether anything waits or is in flight, or a stream is open. */
  constructor (private readonly options: PaceOptions, private readonly beat: () => Promise<void>, private readonly busy: () => boolean) {}

  start (): void {
    if (this.running) return
    this.running = true
    this.lastActivityAt = Date.now()
    this.schedule(0, false)
  }

  stop (): void {
    this.running = false
    clearTimeout(this.timer)
    this.nextAt = Infinity
  }

  /** A request came or ended: the busy pace from now on (the next beat at most busyMs after the last). */
  activity (now = Date.now()): void {
    this.lastActivityAt = now
    if (this.slow) this.hurry(now)
  }

  /** Someone reads the status: keep the team's figures fresh while they do. */
  watched (now = Date.now()): void {
    this.watchedUntil = now + this.options.holdMs
    this.activity(now)
  }

  /** The TTL of a beat sent now: until the next one is due, plus the grace. */
  ttlMs (now = Date.now()): number {
    const grace = this.options.ttlMs - this.options.busyMs
    const untilNext = Number.isFinite(this.nextAt) ? Math.max(0, this.nextAt - now) : this.interval(now)
    return Math.max(this.options.ttlMs, untilNext + grace)
  }

  private interval (now: number): number {
    const recent = now - this.lastActivityAt < this.options.holdMs || now < this.watchedUntil
    return recent || this.busy() ? this.options.busyMs : this.options.idleMs
  }

  private hurry (now: number): void {
    if (!this.running) return
    clearTimeout(this.timer)
    this.schedule(Math.max(0, this.lastBeatAt + this.options.busyMs - now), false)
  }

  private schedule (delayMs: number, slow: boolean): void {
    this.slow = slow
    this.nextAt = Date.now() + delayMs
    this.timer = setTimeout(() => { void this.fire() }, delayMs)
    this.timer.unref()
  }

  private async fire (): Promise<void> {
    if (!this.running) return
    const now = Date.now()
    this.lastBeatAt = now
    // The next beat is planned before this one is sent, so its TTL covers the gap.
    const delayMs = this.interval(now)
    this.schedule(delayMs, delayMs > this.options.busyMs)
    await this.beat()
  }
}
