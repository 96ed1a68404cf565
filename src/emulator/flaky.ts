// Reproducible gateway failures: a seeded PRNG decides, per arrival, whether whatever sits in front of
// the API (nginx here) fails it with a 502 or 503 page, or the connection is reset.
import type { FlakyOptions } from './options'

export type FlakyOutcome = 'flaky-502' | 'flaky-503' | 'reset'

/** mulberry32: tiny, fast and good enough for test dice; returns floats in [0, 1). */
export function mulberry32 (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export class FlakyDice {
  private random: () => number
  private readonly active: boolean

  constructor (private readonly options: Required<FlakyOptions>) {
    this.random = mulberry32(options.seed)
    this.active = options.p502 + options.p503 + options.pReset > 0
  }

  /** One roll per arrival, in arrival order, so the n-th arrival's fate depends only on the seed. */
  roll (): FlakyOutcome | undefined {
    if (!this.active) return undefined
    const r = this.random()
    const { p502, p503, pReset } = this.options
    if (r < p502) return 'flaky-502'
    if (r < p502 + p503) return 'flaky-503'
    if (r < p502 + p503 + pReset) return 'reset'
    return undefined
  }

  reseed (): void {
    this.random = mulberry32(this.options.seed)
  }
}

// The pages nginx serves itself, byte for byte in shape, so normalizers meet the real thing.
export const NGINX_502_PAGE = '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n' +
  '<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n'

export const NGINX_503_PAGE = '<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n' +
  '<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n'
