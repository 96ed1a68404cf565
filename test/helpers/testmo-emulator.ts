// A Testmo emulator for the endpoints the Testmo CLI (`testmo automation:run:submit`) calls: create a
// run, add a thread, append results in batches, complete the run. It enforces a strict limit (an exact
// sliding window) and answers above it as Testmo does: 429 without Retry-After. Project 2 is archived
// (403 with Testmo's message); `pushBackNext` makes the next request a 429 too.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { SlidingWindowLog } from '../../src/emulator/sliding-window'
import { startUpstream, type TestUpstream } from './upstream'

export const ARCHIVED_PROJECT = 2
export const ARCHIVED_MESSAGE = 'The project is archived and cannot be modified.'

export interface TestmoEmulator extends TestUpstream {
  /** Every test result appended, by name, with how often it arrived. */
  results: Map<string, number>
  /** Requests answered 429 (over the strict limit, or pushBackNext). */
  tooMany: number
  completedRuns: Set<number>
  /** The next request is answered 429 without Retry-After. */
  pushBackNext: () => void
}

export async function startTestmoEmulator (limit: number, windowMs: number): Promise<TestmoEmulator> {
  const window = new SlidingWindowLog(limit, windowMs)
  let nextId = 1
  let pushBack = false
  const threads = new Map<number, number>()
  const emu = { results: new Map<string, number>(), tooMany: 0, completedRuns: new Set<number>() }
  const send = (res: ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json' })
    res.end(JSON.stringify(body))
  }
  const respond = (req: IncomingMessage, res: ServerResponse, body: string): void => {
    if (pushBack || !window.tryAccept(performance.now())) {
      pushBack = false
      emu.tooMany++
      return send(res, 429, { message: 'Too Many Requests' })
    }
    if (req.headers.authorization !== 'Bearer testmo-token') return send(res, 401, { message: 'Unauthenticated.' })
    const path = (req.url ?? '').split('?')[0]!
    let m: RegExpExecArray | null
    if ((m = /^\/api\/v1\/projects\/(\d+)\/automation\/runs$/.exec(path)) !== null) {
      if (Number(m[1]) === ARCHIVED_PROJECT) return send(res, 403, { message: ARCHIVED_MESSAGE })
      const name = (JSON.parse(body) as { name?: unknown }).name
      if (typeof name !== 'string' || name === '') return send(res, 422, { message: 'The given data was invalid.', errors: { name: ['The name field is required.'] } })
      return send(res, 201, { id: nextId++ })
    }
    if ((m = /^\/api\/v1\/automation\/runs\/(\d+)\/threads$/.exec(path)) !== null) {
      const id = nextId++
      threads.set(id, Number(m[1]))
      return send(res, 201, { id })
    }
    if ((m = /^\/api\/v1\/automation\/runs\/threads\/(\d+)\/append$/.exec(path)) !== null) {
      if (!threads.has(Number(m[1]))) return send(res, 404, { message: 'Not found.' })
      for (const test of (JSON.parse(body) as { tests: Array<{ folder?: string, name: string }> }).tests) {
        const key = `${test.folder ?? ''}/${test.name}`
        emu.results.set(key, (emu.results.get(key) ?? 0) + 1)
      }
      return send(res, 204, {})
    }
    if ((m = /^\/api\/v1\/automation\/runs\/(\d+)\/complete$/.exec(path)) !== null) {
      emu.completedRuns.add(Number(m[1]))
      return send(res, 204, {})
    }
    send(res, 404, { message: 'Not found.' })
  }
  const upstream = await startUpstream(respond)
  // emu itself is returned, so tooMany is read live.
  return Object.assign(emu, upstream, { pushBackNext: () => { pushBack = true } })
}
