// What a route says when it leaves Redis and comes back (store-failover.ts): one line per change of
// mode with the reason (the store error's message: a timeout, READONLY from a replica, MOVED from a
// cluster node), and the reason kept for readiness. A route that flaps on the same reason (each request
// fails, the next one tries Redis again) says so once a minute, with how many changes went unsaid.

/**
 * Where a route's reservations are made right now: the shared store ("redis"), the embedded one
 * ("memory"), or, while Redis is unreachable, the route's onStoreError choice: this instance's share
 * in process memory ("local"), unshaped ("open"), or refused ("closed").
 */
export type StoreMode = 'redis' | 'memory' | 'local' | 'open' | 'closed'

/** The same reason of leaving Redis is logged at most once in this long (ms). */
const SAME_REASON_QUIET_MS = 60_000

export type ModeLogger = (level: 'info' | 'warn', fields: Record<string, unknown>, message: string) => void

export class StoreModeLog {
  private readonly route: string
  private readonly log: ModeLogger
  /** Why the route last left Redis. */
  reason: string | undefined
  private readonly loggedAt = new Map<string, number>()
  private unsaid = 0
  /** The last departure was not logged, so its return is not either. */
  private quiet = false

  constructor (route: string, log: ModeLogger) {
    this.route = route
    this.log = log
  }

  /** A store error (or, undefined, a store that is not connected) sent or keeps the route out of Redis. */
  fault (err: unknown, connected: boolean): void {
    if (err !== undefined) this.reason = describeFault(err)
    else if (!connected) this.reason = 'the shared store is not connected'
  }

  left (mode: StoreMode, from: StoreMode, connected: boolean, share: string): void {
    const reason = this.reason ?? ''
    const at = this.loggedAt.get(reason)
    this.quiet = at !== undefined && performance.now() - at < SAME_REASON_QUIET_MS
    if (this.quiet) {
      this.unsaid++
      return
    }
    this.loggedAt.set(reason, performance.now())
    const unsaid = this.unsaid > 0 ? ` (${this.unsaid} more changes of mode for the same reason went unsaid)` : ''
    this.unsaid = 0
    this.log('warn', { route: this.route, storeMode: mode, from, reason: this.reason },
      `route ${this.route}: the shared store ${connected ? 'refuses reservations' : 'is unreachable'}${this.reason === undefined ? '' : ` (${this.reason})`}, mode ${mode}${share}${unsaid}`)
  }

  back (from: StoreMode): void {
    if (this.quiet) return
    this.log('info', { route: this.route, storeMode: 'redis', from }, `route ${this.route}: the shared store is back, shaping in Redis again`)
  }
}

/** A store error as readiness and the logs show it: its message's first line, without where in which script. */
function describeFault (err: unknown): string {
  const message = err instanceof Error ? err.message : String(err)
  return message.split('\n')[0].replace(/ script: [0-9a-f]+, on @user_script:\d+\.?/, '').slice(0, 200)
}
