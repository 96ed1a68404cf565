// Start a real Sluice (createSluice, port 0 on loopback) for a test, closed in teardown.
import { Writable } from 'node:stream'
import pino from 'pino'
import { DEFAULTS, type SluiceConfig } from '../../src/config/schema'
import { parseRoute, checkRoutes } from '../../src/config/route'
import { createSluice, type CreateOptions, type SluiceServer } from '../../src/http/app'
import { REDACT_PATHS } from '../../src/http/redact'

export interface TestSluice extends SluiceServer {
  url: string
  /** Every log line, parsed. */
  logs: Array<Record<string, unknown>>
}

export async function startSluice (routes: Array<Record<string, unknown>>, global: Partial<SluiceConfig> = {}, options: Omit<CreateOptions, 'logger'> = {}): Promise<TestSluice> {
  const parsed = routes.map((r, i) => parseRoute(r, `routes[${i}]`))
  checkRoutes(parsed)
  const config: SluiceConfig = {
    host: '127.0.0.1',
    port: 0,
    redis: undefined,
    keyPrefix: DEFAULTS.keyPrefix,
    hashSecret: 'test-secret',
    logLevel: 'info',
    ...global,
    routes: parsed
  }
  const logs: Array<Record<string, unknown>> = []
  const sink = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line) as Record<string, unknown>)
      cb()
    }
  })
  const logger = pino({ level: 'info', redact: { paths: REDACT_PATHS, remove: true } }, sink)
  const sluice = await createSluice(config, { ...options, logger })
  const url = await sluice.listen()
  return Object.assign(sluice, { url, logs })
}
