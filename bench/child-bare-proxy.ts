// Child process: the baseline proxy, @fastify/http-proxy on fastify with nothing else, with the same
// connection pool size to the upstream as Sluice (128 connections, no pipelining).
import Fastify from 'fastify'
import proxy from '@fastify/http-proxy'
import { serveCalls } from './processes'

async function main (): Promise<void> {
  const { upstream } = JSON.parse(process.argv[2]) as { upstream: string }
  const app = Fastify({ logger: false })
  await app.register(proxy, { upstream, undici: { connections: 128, pipelining: 1 } } as never)
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  serveCalls(url, { cpu: () => process.cpuUsage() })
}

void main()
