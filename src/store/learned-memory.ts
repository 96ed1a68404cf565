// The embedded store's learned limits and answer log (LimitMemory): the same rules as
// lua/learn-limit-1.lua, step for step, in this process's memory.
import { EventEmitter } from 'node:events'
import { nowMs } from './clock'
import type { LearnedChange, LearnedRecord, LimitMemory } from './bucket-store'

interface Kept {
  limit: number
  windowMs: number
  kind: LearnedRecord['kind']
  changedAt: number
  pushbackAt: number
  failedProbes: number
  /** Whether the last change was a probe up (a pushback soon after it is a failed probe). */
  raised: boolean
  expiresAt: number
}

interface Answer { atMs: number, accepted: boolean }

export class LearnedMemory implements LimitMemory {
  private readonly kept = new Map<string, Kept>()
  private readonly answers = new Map<string, Answer[]>()
  private readonly events = new EventEmitter()

  async learnedLimit (bucket: string): Promise<LearnedRecord | undefined> {
    return this.record(this.live(bucket), nowMs())
  }

  async changeLearned (bucket: string, change: LearnedChange, ttlMs: number): Promise<LearnedRecord | undefined> {
    const now = nowMs()
    const k = this.live(bucket)
    if (change.op === 'lower') {
      if (k !== undefined) k.pushbackAt = now
      if (k === undefined || change.limit < k.limit) {
        const failed = k !== undefined && k.raised && now - k.changedAt <= change.probeMs
        const next: Kept = { limit: change.limit, windowMs: change.windowMs, kind: change.kind, changedAt: now, pushbackAt: now, failedProbes: (k?.failedProbes ?? 0) + (failed ? 1 : 0), raised: false, expiresAt: now + ttlMs }
        this.kept.set(bucket, next)
        this.events.emit('learned', bucket)
        return this.record(next, now)
      }
      k.expiresAt = now + ttlMs
      return this.record(k, now)
    }
    if (k === undefined || k.limit !== change.from || now - Math.max(k.changedAt, k.pushbackAt) < change.quietMs) return this.record(k, now)
    if (change.to === undefined) {
      this.kept.delete(bucket)
      this.events.emit('learned', bucket)
      return undefined
    }
    Object.assign(k, { limit: change.to, windowMs: change.windowMs, kind: change.kind, changedAt: now, raised: true, expiresAt: now + ttlMs })
    this.events.emit('learned', bucket)
    return this.record(k, now)
  }

  onLearned (listener: (bucket: string) => void): void {
    this.events.setMaxListeners(0)
    this.events.on('learned', listener)
  }

  async noteAnswers (bucket: string, answers: ReadonlyArray<Answer>, keepMs: number): Promise<void> {
    const since = nowMs() - keepMs
    const log = (this.answers.get(bucket) ?? []).filter((a) => a.atMs >= since)
    for (const a of answers) log.push({ atMs: a.atMs, accepted: a.accepted })
    this.answers.set(bucket, log)
  }

  async countAnswers (bucket: string, fromMs: number, toMs: number): Promise<{ accepted: number, rejected: number }> {
    let accepted = 0
    let rejected = 0
    for (const a of this.answers.get(bucket) ?? []) {
      if (a.atMs < fromMs || a.atMs >= toMs) continue
      if (a.accepted) accepted++
      else rejected++
    }
    return { accepted, rejected }
  }

  private live (bucket: string): Kept | undefined {
    const k = this.kept.get(bucket)
    if (k !== undefined && k.expiresAt <= nowMs()) {
      this.kept.delete(bucket)
      return undefined
    }
    return k
  }

  private record (k: Kept | undefined, now: number): LearnedRecord | undefined {
    if (k === undefined) return undefined
    return { limit: k.limit, windowMs: k.windowMs, kind: k.kind, sinceChangeMs: now - k.changedAt, sincePushbackMs: now - k.pushbackAt, failedProbes: k.failedProbes }
  }
}
