// The command-line options of the scenarios that take them (`npm run bench -- <scenario> --name value`).

/** Every option given is one the scenario knows; else an error naming them. */
export function checkFlags (scenario: string, flags: Record<string, string>, known: readonly string[]): void {
  const unknown = Object.keys(flags).filter((f) => !known.includes(f))
  if (unknown.length > 0) throw new Error(`${scenario}: unknown option --${unknown.join(', --')}; known: --${known.join(', --')}`)
}

/** Option `name` as a positive integer, `fallback` when not given; else an error naming it. */
export function positiveInt (scenario: string, flags: Record<string, string>, name: string, fallback: number): number {
  if (flags[name] === undefined) return fallback
  const n = Number(flags[name])
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${scenario}: --${name} takes a positive integer; got ${JSON.stringify(flags[name])}`)
  return n
}
