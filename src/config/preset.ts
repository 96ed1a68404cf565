// Presets: route defaults for a known API (limit, algorithm, key, profile, maxWait…), one YAML file
// each in config/presets/. A preset sits under the user's own settings: any flag, variable or route
// field given explicitly wins over it.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { ConfigError } from '../errors'

const NAME = /^[a-z0-9][a-z0-9-]{0,63}$/

/**
 * config/presets/ of the package. Found by walking up from this module, because it runs both as
 * src/config/preset.ts (tests) and as dist/src/config/preset.js (the built CLI, the container image).
 */
export function presetDir (): string {
  let dir = __dirname
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'config', 'presets')
    if (existsSync(candidate)) return candidate
    dir = join(dir, '..')
  }
  return join(__dirname, '..', '..', 'config', 'presets')
}

/** Names of the presets shipped with Sluice, sorted. */
export function presetNames (): string[] {
  try {
    return readdirSync(presetDir()).filter((f) => f.endsWith('.yaml')).map((f) => f.slice(0, -'.yaml'.length)).filter((n) => NAME.test(n)).sort()
  } catch {
    return []
  }
}

/** The route fields of preset `name`; `field` names the flag or config field for errors. */
export function loadPreset (name: unknown, field: string): Record<string, unknown> {
  const known = presetNames()
  if (typeof name !== 'string' || !NAME.test(name) || !known.includes(name)) {
    throw new ConfigError(field, `unknown preset ${JSON.stringify(name)}; known presets are ${known.join(', ')}`)
  }
  const path = join(presetDir(), `${name}.yaml`)
  let doc: unknown
  try {
    doc = parseYaml(readFileSync(path, 'utf8'))
  } catch (err) {
    throw new ConfigError(field, `preset ${name} (${path}) cannot be read: ${(err as Error).message.split('\n')[0]}`)
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(field, `preset ${name} (${path}) must hold a mapping of route fields`)
  return doc as Record<string, unknown>
}

/**
 * `own` route fields over preset `name`'s. A preset's token-bucket `burst` is dropped when the user
 * switches the algorithm to sliding-window, where a burst is meaningless (and an error).
 */
export function applyPreset (name: unknown, field: string, own: Record<string, unknown>): Record<string, unknown> {
  const preset = loadPreset(name, field)
  if (own.algorithm !== undefined && own.algorithm !== 'token-bucket' && own.burst === undefined) delete preset.burst
  // A preset's cost rules may name its limits (GitHub's POST costs 5 points of 900/min): a user's own
  // limit replaces those limits, so it replaces their costs too.
  if (own.limit !== undefined && own.cost === undefined) delete preset.cost
  return { ...preset, ...own }
}
