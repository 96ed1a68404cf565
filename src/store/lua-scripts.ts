// The store's Lua scripts: their files, the typed commands ioredis defines from them, and the loader
// that expands shared code. A line `--- @include "includes/name"` (as in BullMQ's scripts) is replaced
// by lua/includes/name.lua when the script is loaded; each include is inserted once per script.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Cluster, default as Redis } from 'ioredis'

/**
 * The reply of both reserve scripts: admitted (1, 0, or 2: the state was lost or is being gathered
 * again, nothing booked, wait µs until then), wait µs, remaining, reset µs, ticket, start µs, generation.
 */
export type ReserveReply = [number, number, number, number, number, number, number]

/** The generation the caller last saw ('0': none), the gather after a loss (µs), the loss channel, the bucket (includes/generation.lua). */
export type GenerationArgs = [expect: string, gatherUs: number, channel: string, bucket: string]

export interface SluiceCommands {
  sluiceReserveTokenBucket (state: string, pause: string, generation: string, margin: string, intervalUs: number, tauUs: number, cost: number, maxWaitUs: number, windowUs: number, ...watchAndMargin: [...GenerationArgs, marginUs: number, units: number]): Promise<ReserveReply>
  sluiceReserveSlidingWindow (starts: string, pause: string, floor: string, generation: string, margin: string, limit: number, windowUs: number, cost: number, maxWaitUs: number, keep: number, padUs: number, ...watchAndMargin: [...GenerationArgs, marginUs: number]): Promise<ReserveReply>
  /** reserve-limits.lua: numberOfKeys given per call (1 + 2 per limit), then the keys, then ARGV. */
  sluiceReserveLimits (numberOfKeys: number, ...keysAndArgs: Array<string | number>): Promise<number[]>
  sluiceReleaseTokenBucket (state: string, ticket: string, backUs: number): Promise<number>
  sluiceReleaseSlidingWindow (starts: string, ticket: string, cost: number): Promise<number>
  sluicePushBackTokenBucket (state: string, byUs: number, intervalUs: number): Promise<number>
  sluicePostponeSlidingWindow (starts: string, margin: string, limit: number, windowUs: number, cost: number, ticket: string, aheadUs: number, marginUs: number): Promise<[number, number]>
  sluiceRecordTokenBucket (state: string, generation: string, intervalUs: number, windowUs: number, ...startsUs: string[]): Promise<number>
  sluiceRecordSlidingWindow (starts: string, generation: string, windowUs: number, ...startsUs: string[]): Promise<number>
  sluicePause (pause: string, delayUs: number, channel: string, bucket: string): Promise<number>
  sluiceAcquireLease (leases: string, limit: number, leaseId: string, ttlMs: number): Promise<[number, number]>
  sluiceReleaseLease (leases: string, leaseId: string, channel: string, bucket: string): Promise<number>
  sluiceRenewLeases (leases: string, ttlMs: number, ...leaseIds: string[]): Promise<number>
  sluicePeekTokenBucket (state: string, pause: string, intervalUs: number, tauUs: number): Promise<[number, number, number, number]>
  sluicePeekSlidingWindow (starts: string, pause: string, floor: string, limit: number, windowUs: number): Promise<[number, number, number, number]>
  sluiceHeartbeat (live: string, snapshots: string, id: string, snapshot: string, ttlMs: number): Promise<number>
  sluiceLiveInstances (live: string, snapshots: string): Promise<Array<string | null>>
  sluiceClientPresence (presence: string, instance: string, ttlMs: number, ...clients: string[]): Promise<number[]>
  sluiceLearnLimit (learned: string, op: string, ...args: Array<string | number>): Promise<LearnReply>
}

/** learn-limit-1.lua: limit, window ms, kind, ms since change, ms since pushback, failed probes; [] when none. */
export type LearnReply = [number, number, string, number, number, number] | []

/** Command name, script file (`verb-<numberOfKeys>.lua`, or `verb.lua` when passed per call) and its number of keys. */
export const SCRIPTS: ReadonlyArray<[keyof SluiceCommands, string, number | undefined]> = [
  ['sluiceReserveLimits', 'reserve-limits.lua', undefined],
  ['sluiceReserveTokenBucket', 'reserve-token-bucket-4.lua', 4],
  ['sluiceReserveSlidingWindow', 'reserve-sliding-window-5.lua', 5],
  ['sluiceReleaseTokenBucket', 'release-token-bucket-1.lua', 1],
  ['sluiceReleaseSlidingWindow', 'release-sliding-window-1.lua', 1],
  ['sluicePostponeSlidingWindow', 'postpone-sliding-window-2.lua', 2],
  ['sluicePushBackTokenBucket', 'push-back-token-bucket-1.lua', 1],
  ['sluiceRecordTokenBucket', 'record-token-bucket-2.lua', 2],
  ['sluiceRecordSlidingWindow', 'record-sliding-window-2.lua', 2],
  ['sluicePause', 'pause-1.lua', 1],
  ['sluiceAcquireLease', 'acquire-lease-1.lua', 1],
  ['sluiceReleaseLease', 'release-lease-1.lua', 1],
  ['sluiceRenewLeases', 'renew-leases-1.lua', 1],
  ['sluicePeekTokenBucket', 'peek-token-bucket-2.lua', 2],
  ['sluicePeekSlidingWindow', 'peek-sliding-window-3.lua', 3],
  ['sluiceHeartbeat', 'heartbeat-2.lua', 2],
  ['sluiceLiveInstances', 'live-instances-2.lua', 2],
  ['sluiceClientPresence', 'client-presence-1.lua', 1],
  ['sluiceLearnLimit', 'learn-limit-1.lua', 1]
]

/** src/store/lua (dist/src/store/lua once built: scripts/copy-assets.js copies the .lua files). */
export const LUA_DIR = join(__dirname, 'lua')

const INCLUDE = /^--- @include "([a-z0-9/-]+)"[ \t]*$/gm

/** The text of script `file` of `dir` as Redis runs it: every include expanded, each once. */
export function loadLuaScript (file: string, dir: string = LUA_DIR): string {
  const included = new Set<string>()
  const expand = (text: string): string => text.replace(INCLUDE, (_, name: string) => {
    if (included.has(name)) return ''
    included.add(name)
    return expand(readFileSync(join(dir, `${name}.lua`), 'utf8')).trimEnd()
  })
  return expand(readFileSync(join(dir, file), 'utf8'))
}

/** Defines every script on `client` as a command (EVALSHA, reloaded by ioredis on NOSCRIPT). */
export function defineSluiceCommands<C extends Redis | Cluster> (client: C): C & SluiceCommands {
  for (const [name, file, numberOfKeys] of SCRIPTS) client.defineCommand(name, numberOfKeys === undefined ? { lua: loadLuaScript(file) } : { numberOfKeys, lua: loadLuaScript(file) })
  return client as C & SluiceCommands
}
