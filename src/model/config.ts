/**
 * A Qwen2 (or Llama) model's `config.json`, decoded and checked.
 *
 * Field names are Hugging Face's own, so that a config round-trips unchanged. Defaults
 * are those of transformers' `Qwen2Config` (v4.44), used when a key is absent. Llama is
 * the same decoder block; its `attention_bias` flag puts a bias on q/k/v and o_proj,
 * where Qwen2 always has one on q/k/v and never on o_proj.
 */
import { Data, Effect, ParseResult, Schema } from "effect"

const ARCHITECTURES = ["Qwen2ForCausalLM", "LlamaForCausalLM"] as const
export type Architecture = (typeof ARCHITECTURES)[number]

const MODEL_TYPES: Record<Architecture, string> = { Qwen2ForCausalLM: "qwen2", LlamaForCausalLM: "llama" }

const PositiveInt = Schema.Int.pipe(Schema.positive())
const Positive = Schema.Number.pipe(Schema.positive())
const TokenId = Schema.Int.pipe(Schema.nonNegative())

const ConfigJson = Schema.Struct({
  architectures: Schema.optional(Schema.Array(Schema.String)),
  model_type: Schema.optional(Schema.String),
  vocab_size: PositiveInt,
  hidden_size: PositiveInt,
  intermediate_size: PositiveInt,
  num_hidden_layers: PositiveInt,
  num_attention_heads: PositiveInt,
  // transformers: None means multi-head attention, one key/value head per query head.
  num_key_value_heads: Schema.optional(Schema.NullOr(PositiveInt)),
  head_dim: Schema.optional(PositiveInt),
  hidden_act: Schema.optionalWith(Schema.String, { default: () => "silu" }),
  max_position_embeddings: Schema.optionalWith(PositiveInt, { default: () => 32768 }),
  initializer_range: Schema.optionalWith(Positive, { default: () => 0.02 }),
  rms_norm_eps: Schema.optionalWith(Positive, { default: () => 1e-6 }),
  rope_theta: Schema.optionalWith(Positive, { default: () => 10000 }),
  tie_word_embeddings: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  attention_bias: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  mlp_bias: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  rope_scaling: Schema.optional(Schema.NullOr(Schema.Unknown)),
  use_sliding_window: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  bos_token_id: Schema.optionalWith(Schema.NullOr(TokenId), { default: () => null }),
  eos_token_id: Schema.optionalWith(Schema.NullOr(Schema.Union(TokenId, Schema.Array(TokenId))), {
    default: () => null
  }),
  pad_token_id: Schema.optionalWith(Schema.NullOr(TokenId), { default: () => null })
})

export interface Qwen2Config {
  readonly architecture: Architecture
  readonly model_type: string
  readonly vocab_size: number
  readonly hidden_size: number
  readonly intermediate_size: number
  readonly num_hidden_layers: number
  readonly num_attention_heads: number
  readonly num_key_value_heads: number
  readonly head_dim: number
  readonly hidden_act: "silu"
  readonly max_position_embeddings: number
  readonly initializer_range: number
  readonly rms_norm_eps: number
  readonly rope_theta: number
  readonly tie_word_embeddings: boolean
  /** Llama only: a bias on q/k/v and o_proj. Qwen2 ignores it (fixed biases). */
  readonly attention_bias: boolean
  readonly bos_token_id: number | null
  readonly eos_token_id: number | ReadonlyArray<number> | null
  readonly pad_token_id: number | null
}

/** A config.json that cannot describe a model we run. */
export class ModelConfigError extends Data.TaggedError("ModelConfigError")<{
  readonly source: string
  readonly message: string
}> {}

const problem = (source: string, reason: string) => new ModelConfigError({ source, message: `${source}: ${reason}` })

const describeIssues = (error: ParseResult.ParseError): string =>
  ParseResult.ArrayFormatter.formatErrorSync(error)
    .map((issue) => `${issue.path.length > 0 ? `${issue.path.join(".")}: ` : ""}${issue.message}`)
    .join("; ")

const architectureOf = (json: typeof ConfigJson.Type, source: string): Effect.Effect<Architecture, ModelConfigError> => {
  const named = json.architectures ?? []
  const known = named.find((name): name is Architecture => (ARCHITECTURES as ReadonlyArray<string>).includes(name))
  if (known !== undefined) return Effect.succeed(known)
  const byType = ARCHITECTURES.find((arch) => MODEL_TYPES[arch] === json.model_type)
  if (named.length === 0 && byType !== undefined) return Effect.succeed(byType)
  const found = named.length > 0 ? named.join(", ") : `model_type ${JSON.stringify(json.model_type ?? null)}`
  return Effect.fail(problem(source, `unsupported architecture ${found} (supported: ${ARCHITECTURES.join(", ")})`))
}

/** Decodes a parsed config.json. `source` names it in errors (usually its path). */
export const decodeConfig = (input: unknown, source: string): Effect.Effect<Qwen2Config, ModelConfigError> =>
  Effect.gen(function* () {
    const json = yield* Schema.decodeUnknown(ConfigJson, { errors: "all" })(input).pipe(
      Effect.mapError((error) => problem(source, describeIssues(error)))
    )
    const architecture = yield* architectureOf(json, source)
    const heads = json.num_attention_heads
    const kvHeads = json.num_key_value_heads ?? heads
    const fail = (reason: string) => Effect.fail(problem(source, reason))
    if (json.hidden_act !== "silu") return yield* fail(`hidden_act ${json.hidden_act} is not supported (only silu)`)
    if (json.head_dim === undefined && json.hidden_size % heads !== 0) {
      return yield* fail(`hidden_size ${json.hidden_size} is not a multiple of num_attention_heads ${heads}`)
    }
    if (heads % kvHeads !== 0) {
      return yield* fail(`num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`)
    }
    if (json.rope_scaling !== undefined && json.rope_scaling !== null) {
      return yield* fail(`rope_scaling ${JSON.stringify(json.rope_scaling)} is not supported`)
    }
    if (json.mlp_bias) return yield* fail("mlp_bias is not supported")
    if (json.use_sliding_window) return yield* fail("use_sliding_window is not supported")
    return {
      architecture,
      model_type: MODEL_TYPES[architecture],
      vocab_size: json.vocab_size,
      hidden_size: json.hidden_size,
      intermediate_size: json.intermediate_size,
      num_hidden_layers: json.num_hidden_layers,
      num_attention_heads: heads,
      num_key_value_heads: kvHeads,
      head_dim: json.head_dim ?? json.hidden_size / heads,
      hidden_act: "silu",
      max_position_embeddings: json.max_position_embeddings,
      initializer_range: json.initializer_range,
      rms_norm_eps: json.rms_norm_eps,
      rope_theta: json.rope_theta,
      tie_word_embeddings: json.tie_word_embeddings,
      attention_bias: architecture === "LlamaForCausalLM" && json.attention_bias,
      bos_token_id: json.bos_token_id,
      eos_token_id: json.eos_token_id,
      pad_token_id: json.pad_token_id
    } satisfies Qwen2Config
  })

/** The end-of-sequence ids, whichever form the config gives them in. */
export const eosTokenIds = (config: Qwen2Config): ReadonlyArray<number> =>
  config.eos_token_id === null ? [] : typeof config.eos_token_id === "number" ? [config.eos_token_id] : config.eos_token_id

/** The config.json we write: `extra` (the source folder's own keys) overridden by ours. */
export const configJson = (config: Qwen2Config, extra: Readonly<Record<string, unknown>> = {}): Record<string, unknown> => {
  const { architecture, ...fields } = config
  // Keys transformers would not write for this architecture; JSON.stringify drops undefined.
  const implied = {
    ...(architecture === "LlamaForCausalLM" ? {} : { attention_bias: undefined }),
    ...(config.head_dim * config.num_attention_heads === config.hidden_size ? { head_dim: undefined } : {})
  }
  return { ...extra, architectures: [architecture], ...fields, ...implied, torch_dtype: "float32" }
}

/** The id a batch is padded with: pad_token_id, else the (first) EOS id, as the Trainer's collator falls back. */
export const padTokenId = (config: Qwen2Config): number =>
  config.pad_token_id ?? (Array.isArray(config.eos_token_id) ? config.eos_token_id[0] : config.eos_token_id) ?? 0
