/**
 * `pipeline generate`: one prompt through a model, the continuation on stdout and the
 * backend and speed on stderr. The same loading and generation as the `generate` stage.
 * Imported by the CLI only when the command runs, so the other commands never load
 * TensorFlow.js.
 */
import { Effect } from "effect"
import { describeBackend, ensureBackend } from "../backend/runtime.ts"
import { resolveModelDir } from "../model/source.ts"
import { disposeModel } from "../model/qwen2.ts"
import { completePrompts, type TextGenerationOptions } from "./generation.ts"
import { loadInferenceModel } from "./inference.ts"

export interface GenerateRequest {
  /** A local folder (relative to the working directory) or a hub id. */
  readonly model: string
  readonly prompt: string
  readonly options: TextGenerationOptions
}

const stderr = (text: string) => Effect.sync(() => process.stderr.write(`${text}\n`))

export const generateCommand = Effect.fn("Cli.generate")(function* (request: GenerateRequest) {
  const dir = yield* resolveModelDir(request.model, process.cwd())
  const backend = yield* ensureBackend
  yield* stderr(describeBackend(backend))
  const run = yield* Effect.acquireUseRelease(
    loadInferenceModel(dir, backend),
    (loaded) => completePrompts(loaded, [request.prompt], request.options),
    (loaded) => Effect.sync(() => disposeModel(loaded.model))
  )
  const completion = run.completions[0]!
  yield* Effect.sync(() => process.stdout.write(`${completion.text}\n`))
  yield* stderr(`${run.newTokens} tokens in ${run.seconds.toFixed(2)}s (${run.tokensPerSecond.toFixed(1)} tokens/s), stopped by ${completion.finishReason}`)
})
