// The embedded store's concurrency leases (route `concurrency`): the same rules as
// lua/acquire-lease-1.lua, release-lease-1.lua and renew-leases-1.lua, in this process's memory.
import { EventEmitter } from 'node:events'
import type { BucketStore } from './bucket-store'

type Leases = Pick<BucketStore, 'acquireLease' | 'releaseLease' | 'renewLeases' | 'onLeaseFreed'>

export class MemoryLeases implements Leases {
  /** bucket -> lease id -> expiry (ms since epoch) */
  private readonly held = new Map<string, Map<string, number>>()
  private readonly freed = new EventEmitter()

  constructor () {
    this.freed.setMaxListeners(0)
  }

  async acquireLease (bucket: string, limit: number, leaseId: string, ttlMs: number): Promise<{ acquired: boolean, retryInMs: number }> {
    const now = Date.now()
    let held = this.held.get(bucket)
    if (held === undefined) {
      held = new Map()
      this.held.set(bucket, held)
    }
    for (const [id, expiry] of held) if (expiry <= now) held.delete(id)
    if (held.size < limit) {
      held.set(leaseId, now + ttlMs)
      return { acquired: true, retryInMs: 0 }
    }
    return { acquired: false, retryInMs: Math.max(1, Math.min(...held.values()) - now) }
  }

  async releaseLease (bucket: string, leaseId: string): Promise<void> {
    const held = this.held.get(bucket)
    held?.delete(leaseId)
    if (held?.size === 0) this.held.delete(bucket)
    this.freed.emit('freed', bucket)
  }

  async renewLeases (bucket: string, leaseIds: string[], ttlMs: number): Promise<void> {
    const held = this.held.get(bucket)
    if (held === undefined) return
    for (const id of leaseIds) if (held.has(id)) held.set(id, Date.now() + ttlMs)
  }

  onLeaseFreed (listener: (bucket: string) => void): void {
    this.freed.on('freed', listener)
  }
}
