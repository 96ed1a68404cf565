// One heartbeat: publish this instance's snapshot with its TTL and read every live instance's.
import { isTeamBoard, type BucketStore } from '../store/bucket-store'
import { parseSnapshot, type InstanceSnapshot } from './status'

export interface TeamView {
  /** The live instances' snapshots, this instance's first. */
  snapshots: InstanceSnapshot[]
  reachable: boolean
}

/** Publish `own` for `ttlMs` and read the team: only `own` when the store keeps no team board or does not answer. */
export async function teamBeat (store: BucketStore, own: InstanceSnapshot, ttlMs: number): Promise<TeamView> {
  const board = isTeamBoard(store) ? store : undefined
  if (board === undefined) return { snapshots: [own], reachable: true }
  try {
    await board.heartbeat(own.id, JSON.stringify(own), ttlMs)
    const live = await board.liveInstances()
    const snapshots = [own]
    for (const [id, text] of live) {
      const snap = id === own.id ? undefined : parseSnapshot(text)
      if (snap !== undefined) snapshots.push(snap)
    }
    return { snapshots, reachable: true }
  } catch {
    return { snapshots: [own], reachable: false }
  }
}
