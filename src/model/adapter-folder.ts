/**
 * A PEFT LoRA adapter folder, as `PeftModel.save_pretrained` writes it and
 * `PeftModel.from_pretrained` reads it:
 *
 *   adapter_config.json          LoraConfig's fields: peft_type LORA, task_type CAUSAL_LM,
 *                                r, lora_alpha, target_modules, …, and the base model
 *                                (`base_model_name_or_path`, pinned by `revision`)
 *   adapter_model.safetensors    base_model.model.<module>.lora_A.weight [r, in],
 *                                base_model.model.<module>.lora_B.weight [out, r]
 *
 * plus the tokenizer files, as the Trainer saves them beside an adapter. A folder from
 * outside is data, not trusted: the config is decoded with a Schema, settings we cannot
 * honour (DoRA, trained biases, modules_to_save, …) are refused with the reason, and
 * every tensor must be one the config implies, of the right shape.
 */
import { FileSystem, Path } from "@effect/platform"
import { Data, Effect, Either, ParseResult, Schema } from "effect"
import type { Qwen2Config } from "./config.ts"
import { TOKENIZER_FILES } from "../constants.ts"
import { copyExisting } from "./hf-folder.ts"
import { ALL_LINEAR, DEFAULT_LORA, type LoraPlan, type LoraSettings, planLora, targetNames } from "./lora.ts"
import { checkpointLayoutValues, modelLayoutValues } from "./params.ts"
import { openSafetensors, type SafetensorsError, writeSafetensors } from "./safetensors.ts"

const ADAPTER_CONFIG_FILE = "adapter_config.json"
const ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
/** What a hub download of an adapter needs. */
export const ADAPTER_FILES = [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE] as const

/** PEFT's prefix on every tensor of a saved causal-LM adapter. */
const PEFT_PREFIX = "base_model.model."

/** An adapter folder that cannot be read, or that asks for what we do not do. */
class AdapterError extends Data.TaggedError("AdapterError")<{
  readonly path: string
  readonly message: string
}> {}

const adapterError = (path: string, reason: string) => new AdapterError({ path, message: `${path}: ${reason}` })

const Patterns = Schema.Union(Schema.Array(Schema.String), Schema.String)
const NullishFalse = Schema.optionalWith(Schema.NullOr(Schema.Boolean), { default: () => false })

/** adapter_config.json, the fields we read; PEFT writes many more, which are ignored. */
const AdapterConfigJson = Schema.Struct({
  peft_type: Schema.optional(Schema.NullOr(Schema.String)),
  task_type: Schema.optional(Schema.NullOr(Schema.String)),
  base_model_name_or_path: Schema.optional(Schema.NullOr(Schema.String)),
  revision: Schema.optional(Schema.NullOr(Schema.String)),
  r: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => DEFAULT_LORA.r }),
  lora_alpha: Schema.optionalWith(Schema.Number.pipe(Schema.positive()), { default: () => DEFAULT_LORA.lora_alpha }),
  lora_dropout: Schema.optionalWith(Schema.Number.pipe(Schema.greaterThanOrEqualTo(0), Schema.lessThan(1)), { default: () => 0 }),
  target_modules: Schema.optional(Schema.NullOr(Patterns)),
  exclude_modules: Schema.optional(Schema.NullOr(Patterns)),
  layers_to_transform: Schema.optional(Schema.NullOr(Schema.Union(Schema.Int, Schema.Array(Schema.Int)))),
  layers_pattern: Schema.optional(Schema.NullOr(Patterns)),
  use_rslora: NullishFalse,
  use_dora: NullishFalse,
  fan_in_fan_out: NullishFalse,
  bias: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => "none" }),
  modules_to_save: Schema.optional(Schema.NullOr(Schema.Array(Schema.String))),
  layer_replication: Schema.optional(Schema.NullOr(Schema.Unknown)),
  rank_pattern: Schema.optionalWith(Schema.NullOr(Schema.Record({ key: Schema.String, value: Schema.Int.pipe(Schema.positive()) })), { default: () => ({}) }),
  alpha_pattern: Schema.optionalWith(Schema.NullOr(Schema.Record({ key: Schema.String, value: Schema.Number.pipe(Schema.positive()) })), { default: () => ({}) })
})

/** The base model an adapter was trained on: a hub id (and its commit) or a folder. */
export interface AdapterBase {
  readonly nameOrPath: string
  readonly revision: string | null
}

export interface AdapterConfig {
  readonly settings: LoraSettings
  readonly base: AdapterBase | undefined
}

const describeIssues = (error: ParseResult.ParseError): string =>
  ParseResult.ArrayFormatter.formatErrorSync(error)
    .map((issue) => `${issue.path.length > 0 ? `${issue.path.join(".")}: ` : ""}${issue.message}`)
    .join("; ")

/** What we refuse, and why: each one changes the model in a way this project does not compute. */
const unsupported = (json: typeof AdapterConfigJson.Type): string | undefined => {
  if (json.peft_type !== undefined && json.peft_type !== null && json.peft_type !== "LORA") return `peft_type is ${json.peft_type}; only LORA adapters are supported`
  if (json.task_type !== undefined && json.task_type !== null && json.task_type !== "CAUSAL_LM") return `task_type is ${json.task_type}; only CAUSAL_LM adapters are supported`
  if (json.use_dora === true) return "use_dora is true: DoRA adapters are not supported"
  if (json.bias !== "none" && json.bias !== null) return `bias is "${json.bias}": adapters that train biases are not supported (bias "none" only)`
  if (json.fan_in_fan_out === true) return "fan_in_fan_out is true: that is for GPT-2's Conv1D layers, which Qwen2/Llama do not have"
  if (json.modules_to_save !== undefined && json.modules_to_save !== null && json.modules_to_save.length > 0) {
    return `modules_to_save ${JSON.stringify(json.modules_to_save)}: adapters that carry fully trained modules are not supported`
  }
  if (json.layer_replication !== undefined && json.layer_replication !== null) return "layer_replication is not supported"
  if (json.layers_pattern !== undefined && json.layers_pattern !== null && json.layers_pattern !== "layers" && !(Array.isArray(json.layers_pattern) && json.layers_pattern.every((p) => p === "layers"))) {
    return `layers_pattern ${JSON.stringify(json.layers_pattern)}: Qwen2/Llama layers are \`layers\``
  }
  if (json.target_modules === undefined || json.target_modules === null) return "target_modules is missing"
  return undefined
}

/** Decodes an adapter_config.json's parsed contents; `source` names it in errors. */
const decodeAdapterConfig = (input: unknown, source: string): Effect.Effect<AdapterConfig, AdapterError> =>
  Effect.gen(function* () {
    const json = yield* Schema.decodeUnknown(AdapterConfigJson, { errors: "all" })(input).pipe(
      Effect.mapError((error) => adapterError(source, describeIssues(error)))
    )
    const refused = unsupported(json)
    if (refused !== undefined) return yield* adapterError(source, refused)
    const layers = json.layers_to_transform
    const settings: LoraSettings = {
      r: json.r,
      lora_alpha: json.lora_alpha,
      lora_dropout: json.lora_dropout,
      target_modules: json.target_modules!,
      exclude_modules: json.exclude_modules ?? null,
      layers_to_transform: layers === undefined || layers === null ? null : typeof layers === "number" ? [layers] : layers,
      use_rslora: json.use_rslora === true,
      rank_pattern: json.rank_pattern ?? {},
      alpha_pattern: json.alpha_pattern ?? {}
    }
    const nameOrPath = json.base_model_name_or_path
    return {
      settings,
      base: nameOrPath === undefined || nameOrPath === null || nameOrPath === "" ? undefined : { nameOrPath, revision: json.revision ?? null }
    }
  })

const readJson = (file: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(file).pipe(Effect.mapError((cause) => adapterError(file, `cannot read (${cause.message})`)))
    return yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (error) => adapterError(file, `is not JSON (${error instanceof Error ? error.message : String(error)})`)
    })
  })

/** Whether `dir` holds an adapter (adapter_config.json) rather than a whole model. */
export const isAdapterFolder = (dir: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    return yield* fs.exists(path.join(dir, ADAPTER_CONFIG_FILE)).pipe(Effect.orElseSucceed(() => false))
  })

/** An adapter folder's config, without its weights. */
export const readAdapterConfig = (dir: string) =>
  Effect.gen(function* () {
    const path = yield* Path.Path
    const file = path.join(dir, ADAPTER_CONFIG_FILE)
    return yield* decodeAdapterConfig(yield* readJson(file), file)
  })

export interface LoadedAdapter {
  readonly plan: LoraPlan
  /** lora_A / lora_B by our names (`model.layers.0.self_attn.q_proj.lora_A.weight`), model layout. */
  readonly weights: Map<string, Float32Array>
  readonly base: AdapterBase | undefined
}

/** Reads an adapter for a model of `config`: its plan on that model, and its weights. */
export const readAdapterFolder = (dir: string, config: Qwen2Config): Effect.Effect<LoadedAdapter, AdapterError | SafetensorsError, FileSystem.FileSystem | Path.Path> =>
  Effect.scoped(
    Effect.gen(function* () {
      const path = yield* Path.Path
      const { settings, base } = yield* readAdapterConfig(dir)
      const configFile = path.join(dir, ADAPTER_CONFIG_FILE)
      const plan = yield* Either.match(planLora(config, settings), {
        onLeft: (reason) => Effect.fail(adapterError(configFile, reason)),
        onRight: Effect.succeed
      })
      const file = path.join(dir, ADAPTER_WEIGHTS_FILE)
      const reader = yield* openSafetensors(file)
      const expected = new Set(plan.specs.map((spec) => PEFT_PREFIX + spec.name))
      const extra = [...reader.header.tensors.keys()].filter((name) => !expected.has(name))
      if (extra.length > 0) {
        return yield* adapterError(file, `holds tensors its adapter_config.json does not account for on this model: ${extra.slice(0, 3).join(", ")}${extra.length > 3 ? `, and ${extra.length - 3} more` : ""}`)
      }
      const weights = new Map<string, Float32Array>()
      for (const spec of plan.specs) {
        const name = PEFT_PREFIX + spec.name
        if (!reader.header.tensors.has(name)) return yield* adapterError(file, `has no tensor ${name}, which adapter_config.json implies`)
        weights.set(spec.name, modelLayoutValues(spec, yield* reader.read(name, spec.checkpointShape)))
      }
      return { plan, weights, base }
    })
  )

/** adapter_config.json as PEFT (0.9 and later) writes it, for this plan and base. */
const adapterConfigJson = (plan: LoraPlan, base: AdapterBase | undefined): Record<string, unknown> => {
  const { settings } = plan
  return {
    alpha_pattern: settings.alpha_pattern,
    auto_mapping: null,
    base_model_name_or_path: base?.nameOrPath ?? null,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: settings.layers_to_transform,
    lora_alpha: settings.lora_alpha,
    lora_dropout: settings.lora_dropout,
    modules_to_save: null,
    peft_type: "LORA",
    r: settings.r,
    rank_pattern: settings.rank_pattern,
    revision: base?.revision ?? null,
    // PEFT writes `all-linear` out as the names it stands for.
    target_modules: settings.target_modules === ALL_LINEAR ? targetNames(plan) : settings.target_modules,
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: settings.use_rslora,
    ...(settings.exclude_modules !== null && { exclude_modules: settings.exclude_modules })
  }
}

/**
 * Writes an adapter folder: adapter_config.json, adapter_model.safetensors (written
 * under a temporary name, then renamed), and the tokenizer files of `copyFrom`.
 */
export const writeAdapterFolder = (
  dir: string,
  plan: LoraPlan,
  weights: ReadonlyMap<string, Float32Array>,
  options: { readonly base: AdapterBase | undefined; readonly copyFrom?: string }
) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const io = (target: string) => (cause: { message: string }) => adapterError(target, `cannot write (${cause.message})`)
    yield* fs.makeDirectory(dir, { recursive: true }).pipe(Effect.mapError(io(dir)))
    const tensors = plan.specs.map((spec) => {
      const values = weights.get(spec.name)
      if (values === undefined) throw new Error(`no adapter weights for ${spec.name}`)
      return { name: PEFT_PREFIX + spec.name, shape: spec.checkpointShape, data: () => checkpointLayoutValues(spec, values) }
    })
    const file = path.join(dir, ADAPTER_WEIGHTS_FILE)
    yield* writeSafetensors(`${file}.partial`, tensors, { format: "pt" })
    yield* fs.rename(`${file}.partial`, file).pipe(Effect.mapError(io(file)))
    const configFile = path.join(dir, ADAPTER_CONFIG_FILE)
    yield* fs.writeFileString(configFile, `${JSON.stringify(adapterConfigJson(plan, options.base), null, 2)}\n`).pipe(Effect.mapError(io(configFile)))
    if (options.copyFrom !== undefined) yield* copyExisting(options.copyFrom, dir, TOKENIZER_FILES).pipe(Effect.mapError((e) => adapterError(dir, e.message)))
  })
