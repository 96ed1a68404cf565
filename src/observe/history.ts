// The last ten minutes of team-wide requests per second per bucket, for the dashboard's chart.
// Points of the last minute are recomputed on every tick from the instances' heartbeats (a late
// heartbeat still lands in the right second); older points are final.

export const HISTORY_S = 600

/** [epoch second, forwarded, rejected, would delay, would reject] */
export type Point = [number, number, number, number, number]

export class History {
  private readonly buckets = new Map<string, Map<number, Point>>()

  /** Replace the counts of the seconds in `team` (which covers the last minute) for `bucket`. */
  update (bucket: string, team: Map<number, [number, number, number, number]>, fromS: number, nowS: number): void {
    let points = this.buckets.get(bucket)
    if (points === undefined) {
      points = new Map()
      this.buckets.set(bucket, points)
    }
    for (let s = fromS; s <= nowS; s++) {
      const row = team.get(s)
      if (row === undefined) points.delete(s)
      else points.set(s, [s, ...row])
    }
    for (const s of points.keys()) if (s <= nowS - HISTORY_S) points.delete(s)
  }

  /** Non-empty seconds since `sinceS` (exclusive), oldest first. */
  points (bucket: string, sinceS: number): Point[] {
    const out: Point[] = []
    for (const p of this.buckets.get(bucket)?.values() ?? []) if (p[0] > sinceS) out.push(p)
    return out.sort((a, b) => a[0] - b[0])
  }

  forget (keep: Set<string>): void {
    for (const b of this.buckets.keys()) if (!keep.has(b)) this.buckets.delete(b)
  }
}
