// Which clients each instance holds requests of, told to the shared store on a timer: a client active
// in several instances books 1/n of its look-ahead in each (fair-bucket.ts). The timer runs only while
// some bucket has clients: an idle instance neither wakes for it nor sends anything.
import { randomUUID } from 'node:crypto'
import type { BucketStore, ClientPresence } from '../store/bucket-store'

/** How often each instance tells a shared store which clients it holds requests of (ms), and how long that stays true. */
export const PRESENCE_EVERY_MS = 500
const PRESENCE_TTL_MS = 2000

/** One bucket's view: in how many instances each of its clients is active (missing: 1). */
export class BucketPresence {
  readonly instances = new Map<string, number>()
  /** A report of this bucket is on its way (one at a time). */
  busy = false

  instancesOf (client: string): number {
    return this.instances.get(client) ?? 1
  }
}

/** What the gossip needs of a bucket: its name, its clients now, and its presence view. */
export interface PresenceSubject {
  readonly name: string
  readonly clients: ReadonlyMap<string, unknown>
  readonly presence: BucketPresence
}

export class PresenceGossip<B extends PresenceSubject> {
  private readonly store: BucketStore & ClientPresence
  private readonly buckets: () => Iterable<B>
  private readonly renewed: (bucket: B) => void
  private readonly instanceId = randomUUID().replaceAll('-', '').slice(0, 16)
  private timer: NodeJS.Timeout | undefined
  private closed = false

  /** `buckets`: this instance's buckets now; `renewed`: a bucket's counts were renewed. */
  constructor (store: BucketStore & ClientPresence, buckets: () => Iterable<B>, renewed: (bucket: B) => void) {
    this.store = store
    this.buckets = buckets
    this.renewed = renewed
  }

  /** A bucket got clients: report every PRESENCE_EVERY_MS from now on, until no bucket has any. */
  wake (): void {
    if (this.timer !== undefined || this.closed) return
    this.timer = setInterval(() => this.share(), PRESENCE_EVERY_MS)
    this.timer.unref()
  }

  close (): void {
    this.closed = true
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }

  /** Tell the shared store which clients this instance holds requests of, and learn in how many instances each is. */
  private share (): void {
    let active = false
    for (const b of this.buckets()) {
      const ids = [...b.clients.keys()]
      if (ids.length > 0) active = true
      if (ids.length === 0 || b.presence.busy) continue
      b.presence.busy = true
      this.store.clientPresence(b.name, this.instanceId, ids, PRESENCE_TTL_MS).then((counts) => {
        b.presence.instances.clear()
        ids.forEach((id, i) => { if (counts[i] > 1) b.presence.instances.set(id, counts[i]) })
        this.renewed(b)
      }, () => {
        // Unreachable store: keep the last counts; the limiter reports the outage on admission.
      }).finally(() => { b.presence.busy = false })
    }
    if (!active && this.timer !== undefined) {
      clearInterval(this.timer)
      this.timer = undefined
    }
  }
}
