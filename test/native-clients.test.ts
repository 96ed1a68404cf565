// API clients as their users run them, pointed at Sluice with nothing changed but the address, see
// each API's errors where that API puts them: zulip-js reads result/msg/code, Octokit's RequestError
// GitHub's message and documentation_url, testrail-api TestRail's text. Upstream errors and Sluice's
// own alike (dev dependencies: zulip-js, @octokit/rest, testrail-api).
import { Octokit } from '@octokit/rest'
import t from 'tap'
import { startSluice } from './helpers/sluice'
import { startUpstream, type Responder } from './helpers/upstream'

const zulipInit = require('zulip-js') as (config: { username: string, apiKey: string, realm: string }) => Promise<any>

const TestRail = require('testrail-api') as new (options: { host: string, user: string, password: string }) => any

function answer (status: number, body: unknown): Responder {
  return (_req, res) => {
    res.writeHead(status, { 'content-type': 'application/json' })
    res.end(JSON.stringify(body))
  }
}

t.test('zulip-js: a Zulip BAD_REQUEST, and Sluice\'s own refusal, as Zulip shapes them', async (t) => {
  const zulipError = { result: 'error', msg: 'Invalid stream name \'nowhere\'', code: 'BAD_REQUEST' }
  const up = await startUpstream(answer(400, zulipError))
  // One request a minute and no waiting: the second is Sluice's own 429.
  const s = await startSluice([{ upstream: up.url, limit: '1/min', maxWait: '0s', profile: 'zulip', key: 'header:authorization' }])
  t.teardown(async () => { await s.close(); await up.close() })
  const client = await zulipInit({ username: 'bot@example.com', apiKey: 'zulip-key', realm: s.url })
  const first = await client.messages.send({ to: 'nowhere', type: 'stream', subject: 's', content: 'c' })
  t.match(first, zulipError, 'Zulip\'s own result, msg and code')
  t.equal(first.success, false, 'beside the envelope')
  t.equal(first.error.code, 'BAD_REQUEST')
  const second = await client.messages.send({ to: 'nowhere', type: 'stream', subject: 's', content: 'c' })
  t.match(second, { result: 'error', code: 'RATE_LIMIT_HIT', msg: /has no room within the wait bound/ }, 'Sluice\'s 429 in Zulip\'s words')
  t.type(second['retry-after'], 'number', 'with Zulip\'s retry-after in the body')
  t.equal(second.error.code, 'RATE_LIMITED')
  t.equal(up.hits.length, 1)
})

t.test('Octokit: RequestError carries GitHub\'s message and documentation_url', async (t) => {
  const docs = 'https://docs.github.com/rest/repos/repos#get-a-repository'
  const up = await startUpstream(answer(404, { message: 'Not Found', documentation_url: docs, status: '404' }))
  const s = await startSluice([{ upstream: up.url, limit: '100/s', profile: 'github' }])
  t.teardown(async () => { await s.close(); await up.close() })
  const octokit = new Octokit({ baseUrl: s.url, auth: 'ghp-token', log: { debug () {}, info () {}, warn () {}, error () {} } })
  const err = await octokit.rest.repos.get({ owner: 'acme', repo: 'missing' }).then(() => undefined, (e: unknown) => e as { status: number, message: string, response: { data: any } })
  t.equal(err?.status, 404)
  t.equal(err?.message, `Not Found - ${docs}`, 'GitHub\'s own message, not "Unknown error: {...}"')
  t.equal(err?.response.data.error.code, 'NOT_FOUND', 'and the envelope for code that branches on it')

  const validation = await startUpstream(answer(422, { message: 'Validation Failed', errors: [{ resource: 'Issue', field: 'title', code: 'missing_field' }], documentation_url: docs }))
  const v = await startSluice([{ upstream: validation.url, limit: '100/s', profile: 'github' }])
  t.teardown(async () => { await v.close(); await validation.close() })
  const invalid = await new Octokit({ baseUrl: v.url, auth: 'ghp-token' }).rest.issues.create({ owner: 'acme', repo: 'r', title: '' }).then(() => undefined, (e: unknown) => e as Error)
  t.equal(invalid?.message, `Validation Failed: {"resource":"Issue","field":"title","code":"missing_field"} - ${docs}`, 'GitHub\'s errors array as Octokit prints it')
})

t.test('testrail-api: a TestRail 400 reaches its caller with TestRail\'s text', async (t) => {
  const text = 'Field :case_id is not a valid test case.'
  const up = await startUpstream(answer(400, { error: text }))
  const enveloped = await startSluice([{ upstream: up.url, limit: '100/s', profile: 'testrail' }])
  const passed = await startSluice([{ upstream: up.url, limit: '100/s', profile: 'testrail', errors: 'upstream' }])
  t.teardown(async () => { await enveloped.close(); await passed.close(); await up.close() })
  const failure = async (url: string): Promise<{ message: any, response?: { statusCode: number } }> =>
    await new TestRail({ host: url, user: 'ci@example.com', password: 'tr-key' }).getCase(404).then(() => ({ message: 'resolved' }), (e: any) => e)
  // TestRail's body is {"error": "<text>"}; the envelope's `error` is an object, so the text is at
  // error.message there (profiles/testrail.ts). `errors: upstream` passes TestRail's body untouched.
  const viaEnvelope = await failure(enveloped.url)
  t.equal(viaEnvelope.response?.statusCode, 400)
  t.match(viaEnvelope.message.error, { code: 'VALIDATION_ERROR', message: text }, 'the envelope carries TestRail\'s text')
  const viaUpstream = await failure(passed.url)
  t.same(viaUpstream.message, { error: text }, 'errors: upstream: exactly what TestRail said')
})
