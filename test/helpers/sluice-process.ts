// The real `sluice` command in a child process, for what only a process shows: signals, exit status,
// resident memory. src/ is transpiled once per test process into a temporary directory (types are
// not checked: `npm run typecheck` does that), so the child starts in a second and its memory holds
// Sluice, not a TypeScript compiler. dist/ is not used: another test file may be rebuilding it.
import { spawn, type ChildProcess } from 'node:child_process'
import { get } from 'node:http'
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, extname, join, relative } from 'node:path'
import ts from 'typescript'
import { freePort } from './redis'

const ROOT = join(__dirname, '..', '..')
let built: string | undefined

/** src/ as CommonJS JavaScript (plus its Lua and HTML assets) in a temporary directory; returns the CLI's path. */
export function transpiledCli (): string {
  if (built !== undefined) return built
  const out = mkdtempSync(join(tmpdir(), 'sluice-cli-'))
  process.once('exit', () => rmSync(out, { recursive: true, force: true }))
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const from = join(dir, entry.name)
      const to = join(out, 'dist', relative(ROOT, from))
      if (entry.isDirectory()) {
        walk(from)
      } else if (entry.name.endsWith('.ts')) {
        mkdirSync(dirname(to), { recursive: true })
        const js = ts.transpileModule(readFileSync(from, 'utf8'), {
          compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
          fileName: from
        })
        writeFileSync(to.replace(/\.ts$/, '.js'), js.outputText)
      } else if (['.lua', '.html'].includes(extname(entry.name))) {
        mkdirSync(dirname(to), { recursive: true })
        copyFileSync(from, to)
      }
    }
  }
  walk(join(ROOT, 'src'))
  copyFileSync(join(ROOT, 'package.json'), join(out, 'package.json'))
  symlinkSync(join(ROOT, 'node_modules'), join(out, 'node_modules'))
  // config/presets/, found by presetDir() walking up from dist/src/config: --preset works too.
  symlinkSync(join(ROOT, 'config'), join(out, 'config'))
  built = join(out, 'dist', 'src', 'cli.js')
  return built
}

export interface SluiceProcess {
  child: ChildProcess
  url: string
  port: number
  /** Every JSON log line so far. */
  logs: Array<Record<string, unknown>>
  /** Resolves with the exit code once the process has exited. */
  exited: Promise<number | null>
  /** VmRSS and VmHWM (peak) in kB, from /proc. */
  memory: () => { rssKb: number, hwmKb: number }
  kill: () => Promise<void>
}

export async function startSluiceProcess (args: string[], env: Record<string, string> = {}): Promise<SluiceProcess> {
  // A port chosen here rather than 0: the address is then known whatever the log level.
  const port = await freePort()
  const child = spawn(process.execPath, [transpiledCli(), '--port', String(port), '--host', '127.0.0.1', ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const logs: Array<Record<string, unknown>> = []
  let stderr = ''
  // 'close', not 'exit': the child's last log lines are read by then.
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)))
  let buffered = ''
  let poll: NodeJS.Timeout | undefined
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      let nl
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 1)
        try {
          const parsed = JSON.parse(line) as Record<string, unknown>
          logs.push(parsed)
          if (typeof parsed.address === 'string') resolve(parsed.address)
        } catch {}
      }
    })
    child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    // Below log level info the address is never logged: ask the health route instead.
    poll = setInterval(() => {
      get({ host: '127.0.0.1', port, path: '/_sluice/health', agent: false }, (res) => {
        res.resume()
        if (res.statusCode === 200) resolve(`http://127.0.0.1:${port}`)
      }).on('error', () => {})
    }, 100)
    void exited.then((code) => reject(new Error(`sluice exited with ${code} before listening: ${stderr}`)))
  }).finally(() => clearInterval(poll))
  const memory = (): { rssKb: number, hwmKb: number } => {
    const status = readFileSync(`/proc/${child.pid}/status`, 'utf8')
    return { rssKb: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]), hwmKb: Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]) }
  }
  return {
    child,
    url,
    port: Number(new URL(url).port),
    logs,
    exited,
    memory,
    kill: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGKILL')
      await exited
    }
  }
}
