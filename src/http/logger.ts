// Sluice's log: JSON lines on stdout (pino), secrets redacted, written asynchronously and bounded.
import pino, { type Logger } from 'pino'
import { REDACT_PATHS } from './redact'

/** Log bytes held while stdout does not take them (a stalled log collector); more are dropped. */
const LOG_BUFFER_MAX_BYTES = 16 * 2 ** 20

export function createLogger (level: string): Logger {
  // Asynchronous: one write per request line cost a blocking syscall on the request path; lines that
  // come while a write is out go together in the next one, and pino flushes what is left on exit.
  // Bounded: a reader that stops taking stdout costs at most 16 MiB, then lines are dropped, and
  // stderr says so (once a minute), instead of memory growing without end.
  const destination = pino.destination({ dest: 1, sync: false, maxLength: LOG_BUFFER_MAX_BYTES })
  let dropped = 0
  let toldAt = 0
  destination.on('drop', () => {
    dropped++
    if (Date.now() - toldAt < 60_000) return
    toldAt = Date.now()
    process.stderr.write(`sluice: stdout is not taking log lines; ${dropped} dropped so far (${LOG_BUFFER_MAX_BYTES} bytes are held)\n`)
  })
  return pino({
    level,
    redact: { paths: REDACT_PATHS, remove: true },
    base: { name: 'sluice' }
  }, destination)
}
