// Runs startUpstream in its own process, so arrival times are stamped by an event loop that no
// Sluice instance or test client shares. Talks to the parent over IPC.
import { startUpstream } from './upstream'

async function main (): Promise<void> {
  const up = await startUpstream()
  process.send?.({ type: 'ready', url: up.url })
  process.on('message', (msg: { type: string }) => {
    if (msg.type === 'hits') process.send?.({ type: 'hits', hits: up.hits.map((h) => ({ t: h.t, method: h.method, url: h.url })) })
    if (msg.type === 'close') void up.close().then(() => process.exit(0))
  })
  process.on('disconnect', () => process.exit(0))
}
void main()
