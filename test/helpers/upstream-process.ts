import { fork } from 'node:child_process'
import { join } from 'node:path'

export interface RemoteUpstream {
  url: string
  hits: () => Promise<Array<{ t: number, method: string, url: string }>>
  close: () => Promise<void>
}

/** A loopback origin in a child process (see upstream-child.ts). */
export async function startUpstreamProcess (): Promise<RemoteUpstream> {
  const child = fork(join(__dirname, 'upstream-child.ts'), [], { execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const url = await new Promise<string>((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', (code) => reject(new Error(`upstream child exited with ${code}`)))
    child.on('message', (m: { type: string, url?: string }) => { if (m.type === 'ready') resolve(m.url as string) })
  })
  child.removeAllListeners('exit')
  return {
    url,
    hits: async () => await new Promise((resolve) => {
      const onMessage = (m: { type: string, hits?: Array<{ t: number, method: string, url: string }> }): void => {
        if (m.type !== 'hits') return
        child.off('message', onMessage)
        resolve(m.hits ?? [])
      }
      child.on('message', onMessage)
      child.send({ type: 'hits' })
    }),
    close: async () => {
      if (child.exitCode !== null) return
      await new Promise<void>((resolve) => {
        child.once('exit', () => resolve())
        child.send({ type: 'close' })
        setTimeout(() => child.kill('SIGKILL'), 2000).unref()
      })
    }
  }
}
