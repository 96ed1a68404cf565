// The JSON check Sluice runs on request bodies before admission: it must agree with JSON.parse on
// what is JSON, and name where a body stops being JSON.
import t from 'tap'
import { isJsonContentType, jsonErrorOffset, jsonProblem } from '../src/http/request-body'

function parses (s: string): boolean {
  try {
    JSON.parse(s)
    return true
  } catch {
    return false
  }
}

t.test('positions of typical faults', async (t) => {
  const table: Array<[string, number]> = [
    ['{"a":1,}', 7],
    ['[1, 2,]', 6],
    ['not json', 1],
    ['{"a" 1}', 5],
    ['{"a":1', 6],
    ['"abc', 4],
    ['"a\\xb"', 3],
    ['{"a":tru}', 8],
    ['[01]', 2],
    ['{} x', 3],
    ['', 0],
    ['{\'a\':1}', 1]
  ]
  for (const [text, offset] of table) t.equal(jsonErrorOffset(text), offset, JSON.stringify(text))
  t.same(jsonProblem(Buffer.from('{"a":\n  [1,,2]}')), { position: 11, line: 2, column: 6 })
  t.equal(jsonProblem(Buffer.from('\ufeff{"a": [1, {"b": null}], "c": "\\u00e9"}')), undefined, 'a BOM is tolerated')
})

t.test('agrees with JSON.parse on 20000 seeded random and mutated texts', async (t) => {
  let seed = 7
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  const alphabet = '{}[]",:0123456789-+.eEtrufalsn \\/u\n\tab\u00e9'
  const valid = ['{"a":[1,2.5e-3,{"b":null}],"c":"x\\n\\u00e9"}', '[true,false,null,-0,"\\\\"]', '  {"k" : { } , "l":[ ]}  ']
  let disagreements = 0
  for (let n = 0; n < 20000; n++) {
    let s: string
    if (n % 2 === 0) {
      s = Array.from({ length: rand(12) }, () => alphabet[rand(alphabet.length)]).join('')
    } else {
      const base = valid[rand(valid.length)]!
      const at = rand(base.length)
      s = base.slice(0, at) + (rand(2) === 0 ? alphabet[rand(alphabet.length)] : '') + base.slice(at + rand(2))
    }
    if ((jsonErrorOffset(s) === -1) !== parses(s)) {
      disagreements++
      if (disagreements < 5) t.fail(`disagrees on ${JSON.stringify(s)}`)
    }
  }
  t.equal(disagreements, 0)
  t.equal(jsonErrorOffset('['.repeat(100000) + ']'.repeat(100000)), -1, 'deep nesting does not overflow the stack')
})

t.test('JSON content types', async (t) => {
  for (const type of ['application/json', 'application/json; charset=utf-8', 'Application/JSON', 'application/vnd.api+json', 'application/problem+json;x=1']) t.ok(isJsonContentType(type), type)
  for (const type of ['text/plain', 'application/jsonl', 'application/x-ndjson', 'text/json', 'application/json-seq', undefined]) t.notOk(isJsonContentType(type), String(type))
})
