// A strict reader of the Prometheus text exposition format (version 0.0.4): every line must be a
// HELP, a TYPE or a sample of a declared family; histograms must be cumulative and end in +Inf.
// Throws on the first line that does not parse, naming it.
import { request } from 'undici'

export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

export interface Exposition {
  types: Map<string, string>
  samples: Sample[]
  /** Sum of the values of `name` whose labels include every given one. */
  value: (name: string, labels?: Record<string, string>) => number
  /** The samples of `name` whose labels include every given one. */
  find: (name: string, labels?: Record<string, string>) => Sample[]
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*'
const SAMPLE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)(?: (-?\\d+))?$`)
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y

// Prometheus reads values with Go's ParseFloat, which ignores case in NaN and Inf (prom-client writes "Nan").
function parseValue (text: string, line: string): number {
  const lower = text.toLowerCase()
  if (lower === '+inf' || lower === 'inf' || lower === '+infinity' || lower === 'infinity') return Infinity
  if (lower === '-inf' || lower === '-infinity') return -Infinity
  if (lower === 'nan') return NaN
  const n = Number(text)
  if (text === '' || Number.isNaN(n)) throw new Error(`not a number: ${line}`)
  return n
}

function parseLabels (text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {}
  LABEL.lastIndex = 0
  while (LABEL.lastIndex < text.length) {
    const at = LABEL.lastIndex
    const m = LABEL.exec(text)
    if (m === null || m.index !== at) throw new Error(`bad labels: ${line}`)
    if (m[1] in labels) throw new Error(`duplicate label ${m[1]}: ${line}`)
    labels[m[1]] = m[2].replace(/\\(.)/g, (_, c: string) => c === 'n' ? '\n' : c)
    if (m[3] === '') break
  }
  return labels
}

function familyOf (name: string, types: Map<string, string>): string | undefined {
  if (types.has(name)) return name
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length)
      const type = types.get(base)
      if (type === 'histogram' || (type === 'summary' && suffix !== '_bucket')) return base
    }
  }
  return undefined
}

function matches (s: Sample, labels: Record<string, string>): boolean {
  return Object.entries(labels).every(([k, v]) => s.labels[k] === v)
}

export function parsePrometheus (text: string): Exposition {
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a newline')
  const types = new Map<string, string>()
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    if (line.startsWith('#')) {
      const m = new RegExp(`^# (HELP|TYPE) (${NAME}) ?(.*)$`).exec(line)
      if (m === null) throw new Error(`bad comment line: ${line}`)
      if (m[1] === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3])) throw new Error(`bad type: ${line}`)
        if (types.has(m[2])) throw new Error(`family declared twice: ${line}`)
        types.set(m[2], m[3])
      }
      continue
    }
    const m = SAMPLE.exec(line)
    if (m === null) throw new Error(`bad sample line: ${line}`)
    if (familyOf(m[1], types) === undefined) throw new Error(`sample of an undeclared family: ${line}`)
    samples.push({ name: m[1], labels: m[2] === undefined ? {} : parseLabels(m[2], line), value: parseValue(m[3], line) })
  }
  // Histograms: buckets cumulative, +Inf present and equal to _count.
  for (const [family, type] of types) {
    if (type !== 'histogram') continue
    const series = new Map<string, Sample[]>()
    for (const s of samples.filter((x) => x.name === `${family}_bucket`)) {
      const { le, ...rest } = s.labels
      if (le === undefined) throw new Error(`${family}_bucket without le`)
      const key = JSON.stringify(rest)
      series.set(key, [...(series.get(key) ?? []), s])
    }
    for (const [key, buckets] of series) {
      const sorted = [...buckets].sort((a, b) => parseValue(a.labels.le, '') - parseValue(b.labels.le, ''))
      for (let i = 1; i < sorted.length; i++) if (sorted[i].value < sorted[i - 1].value) throw new Error(`${family} ${key}: buckets not cumulative`)
      const inf = sorted[sorted.length - 1]
      if (inf.labels.le !== '+Inf') throw new Error(`${family} ${key}: no +Inf bucket`)
      const count = samples.find((s) => s.name === `${family}_count` && JSON.stringify(s.labels) === key)
      if (count === undefined || count.value !== inf.value) throw new Error(`${family} ${key}: _count does not equal the +Inf bucket`)
    }
  }
  const find = (name: string, labels: Record<string, string> = {}): Sample[] => samples.filter((s) => s.name === name && matches(s, labels))
  return { types, samples, find, value: (name, labels = {}) => find(name, labels).reduce((n, s) => n + s.value, 0) }
}

/** GET /_sluice/metrics of a running Sluice at `baseUrl`, parsed. */
export async function scrapeMetrics (baseUrl: string): Promise<Exposition> {
  const res = await request(`${baseUrl}/_sluice/metrics`)
  return parsePrometheus(await res.body.text())
}
