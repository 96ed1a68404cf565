'use strict'

const neostandard = require('neostandard')

module.exports = [
  ...neostandard({
    ts: true,
    ignores: ['dist/**', 'node_modules/**', 'bench/results/**'],
  }),
  {
    rules: {
      // `void promise` marks a promise that is deliberately not awaited (fire-and-forget with its own catch).
      'no-void': ['error', { allowAsStatement: true }],
    },
  },
]
