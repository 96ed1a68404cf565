// A command timeout that a blocked event loop cannot trip while the reply already waits in the socket.
import t from 'tap'
import Redis from 'ioredis'
import { withLagAwareTimeout } from '../src/store/lag-aware-timeout'
import { startRedis } from './helpers/redis'
import { StoreTimeoutError } from '../src/errors'

function blockFor (ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) { /* a busy event loop: a burst of arrivals being parsed */ }
}

t.test('lag-aware command timeout', async (t) => {
  const redis = await startRedis()
  const client = new Redis(redis.url)
  t.teardown(async () => { client.disconnect(); await redis.close() })
  await client.ping()

  await t.rejects(withLagAwareTimeout(new Promise(() => {}), 50), StoreTimeoutError, 'a command that never answers times out')

  // The reply arrives while the loop is blocked for 4× the timeout: it must still count.
  const pending = withLagAwareTimeout(client.ping(), 50)
  blockFor(200)
  t.equal(await pending, 'PONG', 'a reply that arrived during a blocked loop is read, not timed out')

  // The same with a plain timer, as ioredis's commandTimeout works: the timer wins.
  const plain = new Redis(redis.url, { commandTimeout: 50 })
  await plain.ping()
  const raced = plain.ping().then(() => 'answered', (err: Error) => err.message)
  blockFor(200)
  t.match(await raced, /timed out/i, 'a plain timer declares a timeout although the reply was there')
  plain.disconnect()
})
