/**
 * `pipeline generate`: one prompt through a model, the continuation on stdout and the
 * backend and speed on stderr. The same loading and generation as the `generate` stage.
 * Imported by the CLI only when the command runs, so the other commands never load
 * TensorFlow.js.
 */
import { Effect } from "effect"
import { describeBackend } from "../backend/runtime.ts"
import { backendReady } from "../backend/service.ts"
import { UsageError } from "../errors.ts"
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

/**
 * The command line's values against the rules the generate stage's params follow
 * (transformers' own: max_new_tokens ≥ 1, temperature > 0, top_k ≥ 0, 0 < top_p ≤ 1):
 * a value outside them is a usage error, before any model is loaded.
 */
export const checkRequest = (request: GenerateRequest): ReadonlyArray<string> => {
  const { options } = request
  const problems: Array<string> = []
  const check = (flag: string, value: number | undefined, valid: (value: number) => boolean, expected: string) => {
    if (value !== undefined && !valid(value)) problems.push(`--${flag} ${value}: expected ${expected}`)
  }
  const whole = (min: number) => (value: number) => Number.isSafeInteger(value) && value >= min
  if (request.model.trim() === "") problems.push(`--model "": expected a model folder or a hub id (Qwen/Qwen2.5-0.5B)`)
  if (request.prompt === "") problems.push(`--prompt "": expected the text to continue; an empty prompt gives the model nothing to start from`)
  check("max-new-tokens", options.maxNewTokens, whole(1), "a whole number of tokens, 1 or more")
  check("temperature", options.temperature, (t) => Number.isFinite(t) && t > 0, "a number greater than 0 (the logits are divided by it; 1 leaves them as they are)")
  check("top-k", options.topK, whole(0), "a whole number, 0 or more (0 keeps every token)")
  check("top-p", options.topP, (p) => p > 0 && p <= 1, "a number greater than 0 and at most 1 (1 keeps every token)")
  check("seed", options.seed, whole(0), "a whole number, 0 or more")
  return problems
}

export const generateCommand = Effect.fn("Cli.generate")(function* (request: GenerateRequest) {
  const problems = checkRequest(request)
  if (problems.length > 0) return yield* new UsageError({ message: problems.join("\n") })
  const dir = yield* resolveModelDir(request.model, process.cwd())
  const backend = yield* backendReady
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
