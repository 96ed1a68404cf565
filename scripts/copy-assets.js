'use strict'
// tsc compiles only .ts: copy the files that src/ loads at run time (Lua scripts, the dashboard page)
// next to their compiled modules, so dist/ runs on its own.
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const exts = new Set(['.lua', '.html'])

function walk (dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const from = path.join(dir, entry.name)
    if (entry.isDirectory()) walk(from)
    else if (exts.has(path.extname(entry.name))) {
      const to = path.join(root, 'dist', path.relative(root, from))
      fs.mkdirSync(path.dirname(to), { recursive: true })
      fs.copyFileSync(from, to)
    }
  }
}
walk(path.join(root, 'src'))

// tsc writes files without the executable bit; `npx sluice` runs the bin directly.
fs.chmodSync(path.join(root, 'dist', 'src', 'cli.js'), 0o755)
