/**
 * The compute backend as an Effect service. The entry point builds the layer once, from
 * `--backend` / `PIPELINE_BACKEND`, and prints the `BackendInfo` it gets; model code
 * then runs on whatever tfjs backend is current.
 */
import { Context, Effect, Layer } from "effect"
import { type BackendInfo, type BackendOptions, BackendUnavailable, initBackend } from "./select.ts"

export class ComputeBackend extends Context.Tag("ComputeBackend")<ComputeBackend, BackendInfo>() {}

const make = (options: BackendOptions = {}): Effect.Effect<BackendInfo, BackendUnavailable> =>
  Effect.tryPromise({
    try: () => initBackend(options),
    catch: (error) =>
      error instanceof BackendUnavailable
        ? error
        : new BackendUnavailable({
          backend: options.backend === undefined || options.backend === "auto" ? "cpu" : options.backend,
          reason: error instanceof Error ? error.message : String(error)
        })
  })

export const layer = (options: BackendOptions = {}): Layer.Layer<ComputeBackend, BackendUnavailable> =>
  Layer.effect(ComputeBackend, make(options))
