// A progress bar redrawn in place on a terminal; plain periodic lines anywhere else (CI logs, pipes,
// tests), where carriage returns and escape codes would only be noise.
import type { Writable } from 'node:stream'
import type { BurstTally } from './ci-burst'

const BAR_WIDTH = 30
/** Terminal: redraw at most this often on answers, and on a clock while none arrive. */
const REDRAW_MS = 100
const TICK_MS = 250
/** Plain mode: one line this often, plus the first and the final one. */
const PLAIN_EVERY_MS = 5000

export function isTty (output: Writable): boolean {
  return (output as Writable & { isTTY?: boolean }).isTTY === true
}

export function formatSeconds (ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`
}

export class Progress {
  private readonly began = performance.now()
  private lastDrawMs = -Infinity
  private last: BurstTally = { done: 0, ok: 0, failed: 0 }
  private readonly timer: NodeJS.Timeout

  constructor (private readonly output: Writable, private readonly total: number, private readonly tty = isTty(output)) {
    // The clock keeps moving while requests wait in Sluice and no answer arrives.
    this.timer = setInterval(() => this.draw(), this.tty ? TICK_MS : PLAIN_EVERY_MS)
    this.timer.unref()
    this.draw()
  }

  update (tally: BurstTally): void {
    this.last = { ...tally }
    if (this.tty && performance.now() - this.lastDrawMs >= REDRAW_MS) this.draw()
  }

  finish (): void {
    clearInterval(this.timer)
    this.draw()
    if (this.tty) this.output.write('\n')
  }

  private draw (): void {
    this.lastDrawMs = performance.now()
    const { done, ok, failed } = this.last
    const elapsed = formatSeconds(this.lastDrawMs - this.began)
    const counts = `${String(done).padStart(String(this.total).length)}/${this.total}  ok ${ok}  failed ${failed}  ${elapsed}`
    if (!this.tty) {
      this.output.write(`  ${counts}\n`)
      return
    }
    const filled = this.total === 0 ? BAR_WIDTH : Math.round(BAR_WIDTH * done / this.total)
    const bar = '█'.repeat(filled) + '░'.repeat(BAR_WIDTH - filled)
    const colour = failed > 0 ? '\x1b[31m' : '\x1b[32m'
    this.output.write(`\r\x1b[2K  ${colour}${bar}\x1b[0m ${counts}`)
  }
}
