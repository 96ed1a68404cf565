// The limiters' and fair schedulers' running counts, as the sluice_admission_events_total series.
import type { RouteLimiter } from '../limiter/route-limiter'
import type { QueueSource } from './bucket-tracker'
import type { AdmissionEvent } from './metrics'

export function * admissionEvents (routes: Iterable<string>, limiters: ReadonlyMap<string, RouteLimiter>, schedulers: ReadonlyMap<string, QueueSource>): Iterable<{ route: string, event: AdmissionEvent, count: number }> {
  for (const route of routes) {
    const late = limiters.get(route)?.stats
    if (late !== undefined) {
      yield { route, event: 'late_start_rebooked', count: late.lateRetries }
      yield { route, event: 'late_start_forwarded', count: late.lateForwarded }
      yield { route, event: 'late_start_moved', count: late.lateMoved }
      yield { route, event: 'late_send_pushed_back', count: late.pushedBack }
    }
    const fair = schedulers.get(route)?.stats
    if (fair !== undefined) {
      yield { route, event: 'refused_at_arrival', count: fair.refusedAtArrival }
      yield { route, event: 'held_timeout', count: fair.heldTimeouts }
      yield { route, event: 'low_priority_probe', count: fair.lowProbes }
      yield { route, event: 'low_priority_probe_refused', count: fair.lowProbesRefused }
    }
  }
}
