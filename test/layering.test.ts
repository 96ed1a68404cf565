// The module map of CONTRIBUTING.md, checked: each folder of src/ imports only the folders below it.
// (Import cycles between files are checked by `npm run check:cycles`.)
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'

const SRC = join(__dirname, '..', 'src')

/** Folder → the folders it may import ('.' is src/ itself: errors.ts, secrets.ts). cli.ts is the top and may import anything. */
const MAY_IMPORT: Record<string, readonly string[]> = {
  '.': [],
  config: ['.', 'profiles'],
  profiles: ['.', 'upstream'],
  upstream: ['.', 'profiles'],
  store: ['.', 'config'],
  emulator: ['.', 'profiles'],
  limiter: ['.', 'config', 'store', 'upstream'],
  observe: ['.', 'config', 'store', 'limiter'],
  http: ['.', 'config', 'profiles', 'store', 'upstream', 'limiter', 'observe'],
  demo: ['.', 'config', 'emulator', 'http'],
  cert: ['.']
}

function sources (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [])
}

function folderOf (file: string): string {
  const rel = relative(SRC, file)
  return rel.includes('/') ? rel.split('/')[0] : '.'
}

t.test('every folder of src/ imports only what the module map allows', async (t) => {
  const files = sources(SRC)
  t.ok(files.length > 50, `read ${files.length} source files`)
  for (const file of files) {
    if (relative(SRC, file) === 'cli.ts') continue
    const from = folderOf(file)
    const allowed = MAY_IMPORT[from]
    t.ok(allowed !== undefined, `${relative(SRC, file)}: its folder is in the module map`)
    const specifiers = [...readFileSync(file, 'utf8').matchAll(/^(?:import|export)\b[^'"]*?from '(\.{1,2}\/[^']+)'/gm)].map((m) => m[1])
    for (const spec of specifiers) {
      const to = folderOf(resolve(dirname(file), spec) + '.ts')
      if (to === from) continue
      t.ok(allowed?.includes(to), `${relative(SRC, file)} imports ${spec} (${from} → ${to})`)
    }
  }
})

t.test('the check sees a forbidden import', async (t) => {
  // The matcher and the folder resolution on a line written as the sources write imports.
  const line = "import type { RouteLimiter } from '../limiter/route-limiter'"
  const spec = /^(?:import|export)\b[^'"]*?from '(\.{1,2}\/[^']+)'/m.exec(line)?.[1]
  t.equal(spec, '../limiter/route-limiter')
  const to = folderOf(resolve(join(SRC, 'store'), spec ?? '') + '.ts')
  t.equal(to, 'limiter')
  t.notOk(MAY_IMPORT.store.includes(to), 'store may not import limiter')
})
