/**
 * A model folder loaded for inference: the weights, the tokenizer saved beside them,
 * and the ids generation and padding need. Evaluation, the `generate` stage and
 * `pipeline generate` all load models through here. A PEFT adapter folder loads as its
 * base model with the adapter merged into the weights (so it runs as fast as the base).
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect } from "effect"
import { checkMemoryFit } from "../backend/memory.ts"
import type { BackendInfo } from "../backend/select.ts"
import { StageError } from "../errors.ts"
import { eosTokenIds } from "../model/config.ts"
import { loadHfFolder, readHfConfig } from "../model/hf-folder.ts"
import { modelFromHost, type Qwen2 } from "../model/qwen2.ts"
import { modelChain, readModelWeights, resolveModelDir } from "../model/source.ts"
import type { Upstream } from "../stage.ts"
import { loadTokenizer, type Tokenizer } from "../tokenizer.ts"

export interface InferenceModel {
  readonly dir: string
  readonly model: Qwen2
  /** Undefined when the folder holds no tokenizer.json: loss still works, generation does not. */
  readonly tokenizer: Tokenizer | undefined
  /** generation_config.json's, config.json's and the tokenizer's EOS ids, together. */
  readonly eosTokenIds: ReadonlyArray<number>
  /** The tokenizer's pad token (the tutorial pads with EOS), else the config's, else EOS, else 0. */
  readonly padTokenId: number
}

const stageError = (error: { readonly message: string }) => new StageError({ message: error.message })

const idList = (value: unknown): ReadonlyArray<number> =>
  typeof value === "number" ? [value] : Array.isArray(value) ? value.filter((id): id is number => typeof id === "number") : []

/** generation_config.json's `eos_token_id`: instruct models list their end-of-turn token only there. */
const generationConfigEos = (dirs: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const file = yield* firstWith(dirs, "generation_config.json")
    if (file === undefined) return []
    const text = yield* fs.readFileString(file).pipe(Effect.orElseSucceed(() => undefined))
    if (text === undefined) return []
    const json = yield* Effect.try({
      try: () => JSON.parse(text) as { eos_token_id?: unknown } | null,
      catch: (cause) => new StageError({ message: `${file} is not JSON: ${cause instanceof Error ? cause.message : String(cause)}` })
    })
    return idList(json?.eos_token_id)
  })

/** The first of `dirs` that holds `name`, as a path. */
const firstWith = (dirs: ReadonlyArray<string>, name: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    for (const dir of dirs) {
      const file = path.join(dir, name)
      if (yield* fs.exists(file).pipe(Effect.orElseSucceed(() => false))) return file
    }
    return undefined
  })

/**
 * Loads a local model folder (or an adapter folder over one), refusing up front (with
 * figures) a model whose weights cannot fit. Activations are left out of the check:
 * scoring and generation never materialise logits at every position.
 */
export const loadInferenceModel = Effect.fn("Inference.load")(function* (dir: string, backend: BackendInfo) {
  const path = yield* Path.Path
  // An adapter folder stands on a base (perhaps through other adapters): files are looked for from the top down.
  const { adapters, baseDir } = yield* modelChain(dir)
  const folders = [...adapters, baseDir]
  const { config } = yield* readHfConfig(baseDir).pipe(Effect.mapError(stageError))
  yield* checkMemoryFit(config, backend.name).pipe(Effect.mapError(stageError))
  const tokenizerFile = yield* firstWith(folders, "tokenizer.json")
  const tokenizer = tokenizerFile === undefined ? undefined : yield* loadTokenizer(path.dirname(tokenizerFile)).pipe(Effect.mapError(stageError))
  const eos = [...new Set([
    ...(yield* generationConfigEos(folders)),
    ...eosTokenIds(config),
    ...(tokenizer?.eosTokenId === undefined ? [] : [tokenizer.eosTokenId])
  ])]
  const model = adapters.length === 0
    ? (yield* loadHfFolder(dir).pipe(Effect.mapError(stageError))).model
    : modelFromHost(config, (yield* readModelWeights(dir)).weights)
  const padTokenId = tokenizer?.padTokenId ?? config.pad_token_id ?? eos[0] ?? 0
  return { dir, model, tokenizer, eosTokenIds: eos, padTokenId } satisfies InferenceModel
})

/** The tokenizer, or a message that says where it should have been. */
export const requireTokenizer = (loaded: InferenceModel): Effect.Effect<Tokenizer, StageError> =>
  loaded.tokenizer !== undefined
    ? Effect.succeed(loaded.tokenizer)
    : Effect.fail(new StageError({
      message: `${loaded.dir} has no tokenizer.json (nor has its base, for an adapter): generating text needs the tokenizer files (tokenizer.json, tokenizer_config.json) beside the weights`
    }))

/** A model a stage runs: how reports name it, and its local folder. */
export interface ModelChoice {
  readonly label: string
  readonly dir: string
}

/** The model of a stage: an upstream stage's (named by its id), or the `model:` param's. */
export const modelToRun = (inputs: ReadonlyArray<Upstream>, model: string | undefined, baseDir: string) =>
  Effect.gen(function* () {
    const upstream = inputs.find((input) => input.outputs.model !== undefined)
    if (upstream !== undefined && model !== undefined) {
      return yield* new StageError({ message: `give \`model\` or a stage that produces a model in \`needs\` ("${upstream.id}"), not both` })
    }
    if (upstream !== undefined) return { label: upstream.id, dir: upstream.outputs.model!.dir } satisfies ModelChoice
    if (model === undefined) {
      return yield* new StageError({ message: "no model: give `model` (a hub id or folder), or put a stage that produces one (such as train) in `needs`" })
    }
    return { label: model, dir: yield* resolveModelDir(model, baseDir) } satisfies ModelChoice
  })
