/**
 * What a training run starts from, decided before anything is loaded: the base model
 * (from scratch, a folder, a hub id, an upstream stage's model, or an adapter's own
 * base), the LoRA adapter if any (new, or continued from a PEFT folder), and the
 * figures the memory check needs. Then `loadTrainee` reads it all into JS memory as a
 * `LayerwiseModel`: from the newest checkpoint when a run is resumed.
 */
import { Effect, Either } from "effect"
import { StageError } from "../errors.ts"
import { type AdapterBase, isAdapterFolder, readAdapterConfig, readAdapterFolder } from "../model/adapter-folder.ts"
import { decodeConfig, type Qwen2Config } from "../model/config.ts"
import { readHfConfig, readHfFolder } from "../model/hf-folder.ts"
import { initLoraWeights, type LoraPlan, type LoraSettings, planLora } from "../model/lora.ts"
import { initialValue, parameterSpecs } from "../model/params.ts"
import { modelChain, readModelWeights, resolveModel, type ResolvedModel, resolveModelDir, upstreamModelDir } from "../model/source.ts"
import type { StageContext } from "../stage.ts"
import { loadTokenizer, resolveTokenizerDir } from "../tokenizer.ts"
import { LayerwiseModel } from "./layerwise.ts"

const stageError = (e: { readonly message: string }) => new StageError({ message: e.message })

/** A Qwen2 config for training from scratch, with `train`'s `init` keys. */
export interface InitConfig {
  readonly vocab_size?: number | undefined
  readonly hidden_size: number
  readonly intermediate_size: number
  readonly num_hidden_layers: number
  readonly num_attention_heads: number
  readonly num_key_value_heads: number
  readonly max_position_embeddings: number
  readonly rope_theta: number
  readonly rms_norm_eps: number
  readonly initializer_range: number
  readonly tie_word_embeddings: boolean
}

/** The `train` params this module reads. */
export interface StartParams {
  readonly model?: string | undefined
  readonly init?: InitConfig | undefined
  readonly tokenizer?: string | undefined
  readonly adapter?: string | undefined
  readonly lora?: LoraSettings | undefined
  readonly seed: number
}

export type BaseModel =
  | { readonly kind: "init"; readonly config: Qwen2Config; readonly copyFrom: string }
  | { readonly kind: "folder"; readonly config: Qwen2Config; readonly dir: string; readonly copyFrom: string; readonly record: AdapterBase }

export type AdapterStart =
  | { readonly kind: "new"; readonly plan: LoraPlan }
  | { readonly kind: "folder"; readonly dir: string; readonly plan: LoraPlan }

export interface TrainingStart {
  readonly base: BaseModel
  readonly adapter: AdapterStart | undefined
  /** How logs name the starting model. */
  readonly description: string
  /** What trainer_state.json records as the base (evaluate's `compare_base` reads it). */
  readonly baseModelRecord: string
}

/** `init`'s config, sized by the tokenizer's vocabulary. */
const initBase = (ctx: StageContext<StartParams>, init: InitConfig) =>
  Effect.gen(function* () {
    const tokenizerDir = yield* resolveTokenizerDir(ctx.params.tokenizer!, ctx.baseDir).pipe(Effect.mapError(stageError))
    const tokenizer = yield* loadTokenizer(tokenizerDir).pipe(Effect.mapError(stageError))
    if (init.vocab_size !== undefined && init.vocab_size < tokenizer.vocabSize) {
      return yield* new StageError({
        message: `${ctx.id}.init.vocab_size is ${init.vocab_size}, but the tokenizer has ${tokenizer.vocabSize} tokens: give at least ${tokenizer.vocabSize}, or leave it out`
      })
    }
    const config = yield* decodeConfig({
      architectures: ["Qwen2ForCausalLM"],
      model_type: "qwen2",
      hidden_act: "silu",
      bos_token_id: tokenizer.bosTokenId ?? null,
      eos_token_id: tokenizer.eosTokenId ?? null,
      pad_token_id: tokenizer.padTokenId ?? null,
      ...init,
      vocab_size: init.vocab_size ?? tokenizer.vocabSize
    }, `${ctx.id}.init`).pipe(Effect.mapError(stageError))
    return { kind: "init", config, copyFrom: tokenizerDir } satisfies BaseModel
  })

/** What an adapter trained on a model names as its base: the hub id pinned to its commit, or the folder. */
const baseRecord = (resolved: ResolvedModel): AdapterBase =>
  resolved.hub === undefined ? { nameOrPath: resolved.dir, revision: null } : { nameOrPath: resolved.hub.id, revision: resolved.hub.sha }

const folderBase = (resolved: ResolvedModel) =>
  Effect.gen(function* () {
    // The base may itself be an adapter folder: its config is its base's.
    const { baseDir } = yield* modelChain(resolved.dir)
    const { config } = yield* readHfConfig(baseDir).pipe(Effect.mapError(stageError))
    return { kind: "folder", config, dir: resolved.dir, copyFrom: baseDir, record: baseRecord(resolved) } satisfies BaseModel
  })

const planOf = (config: Qwen2Config, settings: LoraSettings, where: string) =>
  Either.match(planLora(config, settings), {
    onLeft: (reason) => Effect.fail(new StageError({ message: `${where}: ${reason}` })),
    onRight: Effect.succeed
  })

/** Decides the base and the adapter; loads nothing but configs (and hub files it must download). */
export const resolveStart = (ctx: StageContext<StartParams>) =>
  Effect.gen(function* () {
    const { params } = ctx
    if (params.init !== undefined) {
      const base = yield* initBase(ctx, params.init)
      const { num_hidden_layers: layers, hidden_size: hidden } = params.init
      return {
        base,
        adapter: undefined,
        description: `a new model (${layers} layers, hidden ${hidden}, vocab ${base.config.vocab_size})`,
        baseModelRecord: "initial_model"
      } satisfies TrainingStart
    }
    const adapterDir = params.adapter === undefined ? undefined : yield* resolveModelDir(params.adapter, ctx.baseDir)
    if (adapterDir !== undefined && !(yield* isAdapterFolder(adapterDir))) {
      return yield* new StageError({ message: `${ctx.id}.adapter: ${adapterDir} is not a PEFT adapter folder (no adapter_config.json)` })
    }
    const upstream = upstreamModelDir(ctx.inputs)
    let resolved: ResolvedModel | undefined = upstream !== undefined
      ? { dir: upstream, hub: undefined }
      : params.model === undefined ? undefined : yield* resolveModel(params.model, ctx.baseDir)
    if (resolved === undefined && adapterDir !== undefined) {
      const { base } = yield* readAdapterConfig(adapterDir).pipe(Effect.mapError(stageError))
      if (base === undefined) return yield* new StageError({ message: `${adapterDir}/adapter_config.json names no base model (base_model_name_or_path): give \`model\`` })
      resolved = yield* resolveModel(base.nameOrPath, adapterDir, base.revision)
    }
    if (resolved === undefined) {
      return yield* new StageError({ message: "no model to train: give `model` (a hub id or folder), `init` (from scratch), `adapter` (a PEFT adapter, whose base is used), or a stage in `needs` that produces a model" })
    }
    const baseDir = resolved.dir
    const base = yield* folderBase(resolved)
    const adapter: AdapterStart | undefined = adapterDir !== undefined
      ? { kind: "folder", dir: adapterDir, plan: (yield* readAdapterFolder(adapterDir, base.config).pipe(Effect.mapError(stageError))).plan }
      : params.lora !== undefined
      ? { kind: "new", plan: yield* planOf(base.config, params.lora, `${ctx.id}.lora`) }
      : undefined
    const named = params.model ?? (upstream !== undefined ? ctx.inputs.find((input) => input.outputs.model?.dir === upstream)!.id : baseDir)
    return {
      base,
      adapter,
      description: adapter === undefined ? named : `${named} with a LoRA adapter${adapter.kind === "folder" ? ` (continuing ${params.adapter})` : ""}`,
      baseModelRecord: params.model ?? baseDir
    } satisfies TrainingStart
  })

/** The base's weights, in JS memory: seeded as transformers initialises them, or read (an adapter base merged in). */
const baseWeights = (start: TrainingStart, seed: number) =>
  start.base.kind === "init"
    ? Effect.sync(() => initialWeights(start.base.config, seed))
    : Effect.map(readModelWeights(start.base.dir), (host) => host.weights)

/** transformers' `_init_weights` for `config`, in JS memory. */
export const initialWeights = (config: Qwen2Config, seed: number): Map<string, Float32Array> =>
  new Map(parameterSpecs(config).map((spec, index) => {
    const tensor = initialValue(spec, index, config, seed)
    const values = (tensor.dataSync() as Float32Array).slice()
    tensor.dispose()
    return [spec.name, values]
  }))

/**
 * The model to train, in JS memory. From `checkpoint` when resuming: its folder holds
 * the whole model, or (LoRA) the adapter to put on the base again.
 */
export const loadTrainee = (start: TrainingStart, seed: number, checkpoint: string | undefined) =>
  Effect.gen(function* () {
    const { adapter } = start
    if (adapter === undefined) {
      const weights = checkpoint === undefined ? yield* baseWeights(start, seed) : (yield* readHfFolder(checkpoint).pipe(Effect.mapError(stageError))).weights
      return new LayerwiseModel({ config: start.base.config, weights })
    }
    const weights = yield* baseWeights(start, seed)
    const from = checkpoint ?? (adapter.kind === "folder" ? adapter.dir : undefined)
    const adapterWeights = from === undefined
      ? initLoraWeights(adapter.plan, seed)
      : (yield* readAdapterFolder(from, start.base.config).pipe(Effect.mapError(stageError))).weights
    return new LayerwiseModel({ config: start.base.config, weights, adapter: { plan: adapter.plan, weights: adapterWeights } })
  })

/** The trained weights of a checkpoint, written over the model's own (load_best_model_at_end). */
export const restoreTrained = (model: LayerwiseModel, checkpoint: string) =>
  Effect.gen(function* () {
    const weights = model.adapter === undefined
      ? (yield* readHfFolder(checkpoint).pipe(Effect.mapError(stageError))).weights
      : (yield* readAdapterFolder(checkpoint, model.config).pipe(Effect.mapError(stageError))).weights
    model.overwrite(weights)
  })
