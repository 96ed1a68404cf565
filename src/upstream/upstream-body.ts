// An upstream error body, read once: decoded for the profiles, then echoed into `details` bounded in
// size and depth and scrubbed of credentials. Never throws, whatever bytes arrive.
import { isRecord } from '../profiles/generic'
import type { UpstreamBody } from '../profiles'
import { isSecretName, REDACTED, redactText } from '../secrets'

/** Bytes of an upstream error body worth reading; the caller stops reading there (64 KiB). */
export const MAX_ERROR_BODY_BYTES = 65536
/** Characters of a non-JSON upstream body kept in `details.upstream_body`. */
export const UPSTREAM_BODY_MAX_CHARS = 512
/** Serialized characters up to which a JSON upstream body is kept parsed; beyond, it is cut as text. */
export const UPSTREAM_JSON_MAX_CHARS = 4096

// Old TestRail servers print this line before the JSON of every API response.
const TESTRAIL_AUTH_PREFIX = /^USER AUTHENTICATION SUCCESSFUL!\s*?\r?\n/i

/**
 * Decodes an error body for `Profile.parseError`: at most MAX_ERROR_BODY_BYTES, UTF-8,
 * BOM and TestRail's login banner removed, JSON parsed when it is JSON. Never throws.
 */
export function decodeErrorBody (raw: unknown): UpstreamBody {
  let text = ''
  if (Buffer.isBuffer(raw)) text = raw.subarray(0, MAX_ERROR_BODY_BYTES).toString('utf8')
  else if (typeof raw === 'string') text = raw.slice(0, MAX_ERROR_BODY_BYTES)
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
  text = text.replace(TESTRAIL_AUTH_PREFIX, '')
  if (text.trim() === '') return { text: '', json: undefined, isJson: false }
  try {
    return { text, json: JSON.parse(text), isJson: true }
  } catch {
    return { text, json: undefined, isJson: false }
  }
}

/** `details.upstream_body` (and `upstream_body_truncated`): the JSON when small, else bounded visible text. */
export function upstreamBodyDetails (body: UpstreamBody): Record<string, unknown> {
  if (body.isJson) {
    const kept = sanitize(body.json, 0)
    const serialized = JSON.stringify(kept) ?? ''
    if (serialized.length <= UPSTREAM_JSON_MAX_CHARS) return { upstream_body: kept }
    return { upstream_body: serialized.slice(0, UPSTREAM_BODY_MAX_CHARS), upstream_body_truncated: true }
  }
  const text = redactText(collapse(htmlToText(body.text)))
  if (text.length <= UPSTREAM_BODY_MAX_CHARS) return { upstream_body: text }
  return { upstream_body: text.slice(0, UPSTREAM_BODY_MAX_CHARS), upstream_body_truncated: true }
}

/**
 * Visible text of an HTML page (also fine on plain text). A linear scan rather than
 * regexes: unclosed tags or comments in 64 KiB of garbage must not cost quadratic time.
 */
export function htmlToText (text: string): string {
  if (!text.includes('<')) return text
  const lower = text.toLowerCase()
  let out = ''
  let i = 0
  while (i < text.length) {
    const open = text.indexOf('<', i)
    if (open < 0) {
      out += text.slice(i)
      break
    }
    out += text.slice(i, open) + ' '
    let skipTo: number
    if (lower.startsWith('<!--', open)) {
      const end = lower.indexOf('-->', open + 4)
      skipTo = end < 0 ? text.length : end + 3
    } else if (lower.startsWith('<script', open) || lower.startsWith('<style', open)) {
      const tag = lower.startsWith('<script', open) ? '</script' : '</style'
      const end = lower.indexOf(tag, open)
      const close = end < 0 ? -1 : lower.indexOf('>', end)
      skipTo = close < 0 ? text.length : close + 1
    } else {
      const close = text.indexOf('>', open)
      skipTo = close < 0 ? text.length : close + 1
    }
    i = skipTo
  }
  return out.replace(/&(nbsp|amp|lt|gt|quot|#39|apos);/g, (_, name: string) => ENTITIES[name] ?? ' ')
}

const ENTITIES: Readonly<Record<string, string>> = { nbsp: ' ', amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'", apos: "'" }

/** Whitespace runs as one space, trimmed. */
export function collapse (text: string): string {
  return text.replace(/\s+/g, ' ').trim()
}

// Bounds for echoing upstream JSON: deep or wide structures are cut, not walked.
const MAX_DEPTH = 8
const MAX_ENTRIES = 100

/** Serialized characters up to which upstream details or field errors are copied whole. */
const DETAILS_MAX_CHARS = 8192

/** `sanitize`, and beyond DETAILS_MAX_CHARS the start of its JSON text: an envelope stays small. */
export function boundedJson (value: unknown): unknown {
  const kept = sanitize(value, 0)
  const serialized = JSON.stringify(kept) ?? ''
  return serialized.length <= DETAILS_MAX_CHARS ? kept : serialized.slice(0, UPSTREAM_BODY_MAX_CHARS)
}

/** A bounded, JSON-safe, credential-scrubbed copy of upstream JSON. */
function sanitize (value: unknown, depth: number): unknown {
  if (typeof value === 'string') return redactText(value.length > UPSTREAM_JSON_MAX_CHARS ? value.slice(0, UPSTREAM_JSON_MAX_CHARS) : value)
  if (typeof value === 'number') return Number.isFinite(value) ? value : null
  if (typeof value === 'boolean' || value === null) return value
  if (depth >= MAX_DEPTH) return '[depth limit]'
  if (Array.isArray(value)) return value.slice(0, MAX_ENTRIES).map(item => sanitize(item, depth + 1))
  if (isRecord(value)) {
    const out: Record<string, unknown> = {}
    for (const key of Object.keys(value).slice(0, MAX_ENTRIES)) {
      if (key === '__proto__') continue
      const item = value[key]
      out[key] = typeof item === 'string' && isSecretName(key) ? REDACTED : sanitize(item, depth + 1)
    }
    return out
  }
  return null
}
