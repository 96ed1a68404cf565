import t from 'tap'
import { REDACTED, isSecretName, redactText, redactUrl, scrub } from '../src/secrets'

t.test('names that carry credentials', async (t) => {
  const secret = ['access_token', 'private_token', 'X-Amz-Signature', 'X-Amz-Credential', 'apiKey', 'api_key', 'oauth_token', 'client_secret',
    'jwt', 'session', 'sid', 'key', 'password', 'userPassword', 'userpass', 'db_pwd', 'dbpwd', 'csrftoken', 'refreshToken', 'Authorization', 'cookie']
  const plain = ['keyword', 'author', 'sidebar', 'page', 'per_page', 'run_id', 'passport', 'message', 'q', 'sort', 'a'.repeat(200) + 'token']
  for (const name of secret) t.ok(isSecretName(name), `${name} is a credential's name`)
  for (const name of plain) t.notOk(isSecretName(name), `${name.slice(0, 40)} is not`)
})

t.test('masking in URLs, free text and known values', async (t) => {
  t.equal(redactUrl('/x?private_token=abc&page=2&userpass=hunter2'), `/x?private_token=${REDACTED}&page=2&userpass=${REDACTED}`)
  t.equal(redactUrl('/x'), '/x')
  t.equal(redactUrl('/x?%ZZ=1&token=y'), `/x?%ZZ=1&token=${REDACTED}`, 'bad percent-encoding does not throw')
  t.equal(redactText('Bearer abcdefgh1234 was refused'), `Bearer ${REDACTED} was refused`)
  t.equal(redactText('api_key: abcd1234, user: alice'), `api_key: ${REDACTED}, user: alice`)
  t.equal(redactText('see https://bob:hunter22@example.com/x'), `see https://bob:${REDACTED}@example.com/x`)
  t.equal(scrub('{"echo":"tok\\"en"}', ['tok"en']), `{"echo":"${REDACTED}"}`, 'also as escaped inside a JSON string')
})
