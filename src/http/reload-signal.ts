// Reload from the command line: SIGHUP to a serving process re-reads its config file and environment
// (the same flags it started with), validates the whole config, and swaps it in (http/reload.ts), or,
// when invalid, keeps the running one and logs one line naming the field. `sluice reload --pid-file
// FILE` sends that signal to the pid a `sluice --pid-file FILE` wrote.
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import type { Logger } from 'pino'
import { loadConfig } from '../config/load'
import { ConfigError, StatusUsageError } from '../errors'
import type { SluiceServer } from './app'
import { Reloader } from './reload'

/** Serve-side: reload on SIGHUP, one at a time (a signal during a reload runs one more after it). */
export function reloadOnHangup (sluice: SluiceServer, argv: string[], logger: Logger): Reloader {
  const reloader = new Reloader(sluice, logger)
  let running: Promise<void> | undefined
  let again = false
  const run = async (): Promise<void> => {
    do {
      again = false
      await reloadOnce(reloader, argv, logger)
    } while (again)
    running = undefined
  }
  process.on('SIGHUP', () => {
    if (running !== undefined) {
      again = true
      return
    }
    running = run()
  })
  if (sluice.config.pidFile !== undefined) {
    const path = sluice.config.pidFile
    writeFileSync(path, `${process.pid}\n`)
    process.once('exit', () => rmSync(path, { force: true }))
  }
  return reloader
}

async function reloadOnce (reloader: Reloader, argv: string[], logger: Logger): Promise<void> {
  let next
  try {
    next = loadConfig(argv, process.env)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    logger.error({ field: err.field }, `reload refused, the running config stays: ${err.message}`)
    return
  }
  try {
    const summary = await reloader.reload(next)
    logger.info(summary, `config reloaded: ${describe(summary)}`)
    if (summary.restartNeeded.length > 0) logger.warn({ fields: summary.restartNeeded }, `a restart is needed to change ${summary.restartNeeded.join(', ')}; their running values stay`)
  } catch (err) {
    logger.error({ err }, 'reload failed, the running config stays')
  }
}

function describe (s: { added: string[], removed: string[], rebudgeted: string[], reforwarded: string[], unchanged: string[] }): string {
  const parts = [['added', s.added], ['removed', s.removed], ['new budget', s.rebudgeted], ['new forwarding', s.reforwarded], ['unchanged', s.unchanged]] as const
  return parts.filter(([, names]) => names.length > 0).map(([what, names]) => `${what} ${names.join(', ')}`).join('; ')
}

/** `sluice reload --pid-file FILE` (or SLUICE_PID_FILE): SIGHUP to the process that wrote it. */
export function sendReload (argv: string[], env: NodeJS.ProcessEnv): number {
  let file: string | undefined
  try {
    file = parseArgs({ args: argv, options: { 'pid-file': { type: 'string' } }, strict: true }).values['pid-file'] ?? env.SLUICE_PID_FILE
  } catch (err) {
    throw new StatusUsageError(`${(err as Error).message}; usage: sluice reload --pid-file FILE`)
  }
  if (file === undefined || file === '') throw new StatusUsageError('usage: sluice reload --pid-file FILE (the file given to sluice --pid-file), or kill -HUP <pid>')
  const pid = Number(readFileSync(file, 'utf8').trim())
  if (!Number.isInteger(pid) || pid <= 0) throw new StatusUsageError(`${file} does not hold a process id`)
  process.kill(pid, 'SIGHUP')
  return 0
}
