// Parsing of the human units used in flags and config files: rates ("180/min") and durations ("30s").
// Every parser returns milliseconds, or throws a plain Error whose message says what was expected;
// the caller adds the field name.

const WINDOW_UNITS_MS: Record<string, number> = {
  s: 1000,
  sec: 1000,
  second: 1000,
  m: 60_000,
  min: 60_000,
  minute: 60_000,
  h: 3_600_000,
  hr: 3_600_000,
  hour: 3_600_000
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000 }

export interface Rate {
  /** Requests allowed per window. */
  count: number
  windowMs: number
}

/** "180/min", "20/s", "5000/h", "30/10s" (a count per a multiple of a unit). */
export function parseRate (input: unknown): Rate {
  const text = String(input).trim()
  const match = /^(\d+)\s*\/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)$/i.exec(text)
  if (match === null) throw new Error(`expected a rate such as 180/min, 20/s or 5000/h, got ${JSON.stringify(input)}`)
  const count = Number(match[1])
  const multiple = match[2] === undefined ? 1 : Number(match[2])
  const unitMs = WINDOW_UNITS_MS[match[3].toLowerCase()]
  if (unitMs === undefined) throw new Error(`unknown rate unit "${match[3]}" in ${JSON.stringify(input)}: use /s, /min or /h`)
  if (count < 1) throw new Error(`a rate needs at least 1 request per window, got ${JSON.stringify(input)}`)
  const windowMs = Math.round(multiple * unitMs)
  if (windowMs < 1) throw new Error(`the window of ${JSON.stringify(input)} is shorter than 1 ms`)
  return { count, windowMs }
}

/** "500ms", "30s", "2m", "1h", or a bare number of milliseconds. */
export function parseDuration (input: unknown): number {
  if (typeof input === 'number' && Number.isFinite(input) && input >= 0) return input
  const text = String(input).trim()
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?$/i.exec(text)
  if (match === null) throw new Error(`expected a duration such as 500ms, 30s or 2m, got ${JSON.stringify(input)}`)
  const unit = (match[2] ?? 'ms').toLowerCase()
  return Math.round(Number(match[1]) * DURATION_UNITS_MS[unit])
}

export function formatRate (rate: Rate): string {
  const units: Array<[number, string]> = [[3_600_000, 'h'], [60_000, 'min'], [1000, 's']]
  for (const [ms, name] of units) {
    if (rate.windowMs === ms) return `${rate.count}/${name}`
    if (rate.windowMs % ms === 0) return `${rate.count}/${rate.windowMs / ms}${name === 'min' ? 'm' : name}`
  }
  return `${rate.count}/${rate.windowMs}ms`
}
