// The emulated rate-limited upstream used by tests, benchmarks and `sluice demo`.
export { startEmulator, type Emulator, type EarlyOptions, type MaintenanceOptions } from './emulator'
export { densestWindow, maxInWindow } from './sliding-window'
export { EMULATOR_DEFAULTS, EMULATOR_PROFILES, type EmulatorOptions, type EmulatorProfile, type FlakyOptions, type RateLimitHeaderDraft, type ResolvedEmulatorOptions } from './options'
export { OUTCOMES, type Arrival, type EmulatorStats, type Outcome, type Pushback } from './arrival-log'
