// Child process: the delay relay between the Sluice instances and Redis (a distant Redis), in a process
// of its own so its timers share no event loop with the load or the proxies. Its URL is a Redis URL.
import { startDelayRelay, type DelayRelayOptions } from '../test/helpers/delay-relay'
import { serveCalls } from './processes'

async function main (): Promise<void> {
  const options = JSON.parse(process.argv[2]) as DelayRelayOptions
  const relay = await startDelayRelay(options)
  serveCalls(`redis://127.0.0.1:${relay.port}`, {
    setDelay: (ms) => { relay.setDelay(Number(ms)) },
    stats: () => relay.stats()
  })
}

void main()
