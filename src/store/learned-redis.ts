// The Redis store's learned limits and answer log (LimitMemory), in the bucket's hash slot:
// `{bucket}:learned` (lua/learn-limit-1.lua) and `{bucket}:answers`, a sorted set of attempts'
// send times (score: µs of Redis time; member: a for accepted, r for pushed back, and a unique tail).
import { randomBytes } from 'node:crypto'
import type { LearnedChange, LearnedRecord } from './bucket-store'
import type { LearnReply } from './lua-scripts'
import type { RedisKeys } from './redis-keys'
import type { SluiceRedis } from './redis-connection'

const TAG = randomBytes(4).toString('hex')
let seq = 0

function recordOf (reply: LearnReply): LearnedRecord | undefined {
  if (reply.length === 0) return undefined
  const [limit, windowMs, kind, sinceChangeMs, sincePushbackMs, failedProbes] = reply
  return { limit, windowMs, kind: kind as LearnedRecord['kind'], sinceChangeMs, sincePushbackMs, failedProbes }
}

export async function learnedLimit (client: SluiceRedis, keys: RedisKeys, bucket: string): Promise<LearnedRecord | undefined> {
  return recordOf(await client.sluiceLearnLimit(keys.bucket(bucket, 'learned'), 'get'))
}

export async function changeLearned (client: SluiceRedis, keys: RedisKeys, bucket: string, c: LearnedChange, ttlMs: number): Promise<LearnedRecord | undefined> {
  const key = keys.bucket(bucket, 'learned')
  const ttl = Math.max(1, Math.round(ttlMs))
  const reply = c.op === 'lower'
    ? await client.sluiceLearnLimit(key, 'lower', c.limit, c.windowMs, c.kind, Math.round(c.probeMs), ttl, keys.learnedChannel, bucket)
    : await client.sluiceLearnLimit(key, 'raise', c.from, c.to ?? 0, c.windowMs, c.kind, Math.round(c.quietMs), ttl, keys.learnedChannel, bucket)
  return recordOf(reply)
}

export async function noteAnswers (client: SluiceRedis, keys: RedisKeys, bucket: string, answers: ReadonlyArray<{ atMs: number, accepted: boolean }>, keepMs: number): Promise<void> {
  if (answers.length === 0) return
  const key = keys.bucket(bucket, 'answers')
  const args: Array<string | number> = []
  let newest = 0
  for (const a of answers) {
    const us = Math.round(a.atMs * 1000)
    newest = Math.max(newest, us)
    args.push(us, `${a.accepted ? 'a' : 'r'}${us}.${TAG}.${seq++}`)
  }
  await client.multi()
    .zadd(key, ...args)
    .zremrangebyscore(key, '-inf', `(${newest - Math.round(keepMs * 1000)}`)
    .pexpire(key, Math.max(1, Math.round(keepMs)))
    .exec()
}

export async function countAnswers (client: SluiceRedis, keys: RedisKeys, bucket: string, fromMs: number, toMs: number): Promise<{ accepted: number, rejected: number }> {
  const members = await client.zrangebyscore(keys.bucket(bucket, 'answers'), Math.round(fromMs * 1000), `(${Math.round(toMs * 1000)}`)
  let accepted = 0
  for (const m of members) if (m.startsWith('a')) accepted++
  return { accepted, rejected: members.length - accepted }
}
