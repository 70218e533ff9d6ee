/**
 * The compute backend as an Effect service. The entry point builds its layer once, from
 * `--backend` / `--threads` (or PIPELINE_BACKEND / PIPELINE_THREADS), and provides it to
 * the stages; a model stage asks for `ready` before its first tensor. The backend starts
 * on that first ask, once: a run whose model stages are all cached never loads
 * TensorFlow.js (select.ts, and with it tfjs, is imported on that first ask too).
 */
import { Context, Effect, Layer } from "effect"
import { StageError } from "../errors.ts"
import type { BackendInfo, BackendOptions } from "./select.ts"

export interface ComputeBackendService {
  /** The backend, started on first use and the same afterwards. */
  readonly ready: Effect.Effect<BackendInfo, StageError>
}

export class ComputeBackend extends Context.Tag("ComputeBackend")<ComputeBackend, ComputeBackendService>() {}

const start = (options: BackendOptions): Effect.Effect<BackendInfo, StageError> =>
  Effect.tryPromise({
    try: () => import("./select.ts").then(({ initBackend }) => initBackend(options)),
    catch: (error) => new StageError({ message: error instanceof Error ? error.message : String(error), cause: error })
  })

export const layer = (options: BackendOptions = {}): Layer.Layer<ComputeBackend> =>
  Layer.effect(ComputeBackend, Effect.map(Effect.cached(start(options)), (ready) => ComputeBackend.of({ ready })))

/** The backend, from the service: what model stages call before they compute. */
export const backendReady: Effect.Effect<BackendInfo, StageError, ComputeBackend> = Effect.flatMap(ComputeBackend, (backend) => backend.ready)
