/**
 * LoRA as PEFT defines it (peft/tuners/lora): a targeted linear layer computes
 *
 *   y = x W + b + (dropout(x) A) B · scaling,   scaling = lora_alpha / r  (√r with rsLoRA)
 *
 * with A [in, r] and B [r, out] here (model layout, as every linear weight: see
 * params.ts); PEFT stores them as `lora_A.weight` [r, in] and `lora_B.weight` [out, r].
 * A starts kaiming-uniform(a = √5), i.e. U(−1/√in, 1/√in), and B at zero, so a fresh
 * adapter leaves the model unchanged. The names of everything a user writes are
 * LoraConfig's own (`r`, `lora_alpha`, `lora_dropout`, `target_modules`, …), and target
 * matching follows `check_target_module_exists`: a list matches a module's name or its
 * last dotted parts, a string is a regular expression over the whole name, and
 * `all-linear` is every linear layer but the output head.
 */
import * as tf from "@tensorflow/tfjs-core"
import { Either } from "effect"
import { KeyedStream } from "../random.ts"
import type { Qwen2Config } from "./config.ts"
import { parameterSpecs, type TensorSpec } from "./params.ts"

/** PEFT's shorthand for every linear layer but the output head. */
export const ALL_LINEAR = "all-linear"

/** The LoraConfig fields that shape an adapter, as adapter_config.json names them. */
export interface LoraSettings {
  readonly r: number
  readonly lora_alpha: number
  readonly lora_dropout: number
  /** Module names (exact or as the end of a dotted name), a regular expression over the whole name, or `all-linear`. */
  readonly target_modules: ReadonlyArray<string> | string
  /** Modules to leave alone, matched the same way. */
  readonly exclude_modules: ReadonlyArray<string> | string | null
  /** Only these layer indices (`model.layers.N`). */
  readonly layers_to_transform: ReadonlyArray<number> | null
  /** scaling = lora_alpha / √r instead of lora_alpha / r. */
  readonly use_rslora: boolean
  /** Per-module rank and alpha, keyed by a pattern matching the end of the module's name. */
  readonly rank_pattern: Readonly<Record<string, number>>
  readonly alpha_pattern: Readonly<Record<string, number>>
}

/** PEFT's defaults (LoraConfig()). */
export const DEFAULT_LORA: Omit<LoraSettings, "target_modules"> = {
  r: 8,
  lora_alpha: 8,
  lora_dropout: 0,
  exclude_modules: null,
  layers_to_transform: null,
  use_rslora: false,
  rank_pattern: {},
  alpha_pattern: {}
}

/** One adapted linear layer. */
export interface LoraModule {
  /** The linear layer's name without `.weight`: `model.layers.0.self_attn.q_proj`. */
  readonly module: string
  readonly r: number
  readonly alpha: number
  readonly scaling: number
  readonly inFeatures: number
  readonly outFeatures: number
  readonly a: TensorSpec
  readonly b: TensorSpec
}

/** An adapter's shape on a given model: which layers, their ranks and scalings, and its tensors. */
export interface LoraPlan {
  readonly settings: LoraSettings
  readonly modules: ReadonlyArray<LoraModule>
  /** lora_A then lora_B of each module, in the model's parameter order. */
  readonly specs: ReadonlyArray<TensorSpec>
  /** Module name → scaling. */
  readonly scaling: ReadonlyMap<string, number>
  readonly dropout: number
}

export const loraAName = (module: string) => `${module}.lora_A.weight`
export const loraBName = (module: string) => `${module}.lora_B.weight`

/**
 * A regular expression from a config, refused when it could backtrack for ever: a
 * quantified group that itself holds a quantifier (`(a+)+`), the classic catastrophic
 * shape. Module names are short, but an adapter_config.json is data from outside.
 */
const safeRegex = (pattern: string, what: string, prefix = ""): Either.Either<RegExp, string> => {
  if (pattern.length > 1000) return Either.left(`${what} is ${pattern.length} characters long; at most 1000 are accepted`)
  if (/\((?:[^()\\]|\\.)*[*+}](?:[^()\\]|\\.)*\)[*+{?]/.test(pattern)) {
    return Either.left(`${what} ${JSON.stringify(pattern)} nests one repetition inside another, which can take exponential time: write it without nested quantifiers`)
  }
  try {
    return Either.right(new RegExp(`^${prefix}(?:${pattern})$`, "u"))
  } catch (error) {
    return Either.left(`${what} ${JSON.stringify(pattern)} is not a regular expression: ${error instanceof Error ? error.message : String(error)}`)
  }
}

/** `check_target_module_exists`'s matching of one pattern set against a module's name. */
const matcher = (patterns: ReadonlyArray<string> | string, what: string): Either.Either<(module: string) => boolean, string> => {
  if (typeof patterns === "string") return Either.map(safeRegex(patterns, what), (regex) => (module: string) => regex.test(module))
  return Either.right((module: string) => patterns.some((name) => module === name || module.endsWith(`.${name}`)))
}

/** PEFT's `get_pattern_key`: the first key whose pattern matches the end of the name. */
const patternValue = (patterns: Readonly<Record<string, number>>, module: string, what: string): Either.Either<number | undefined, string> => {
  for (const [key, value] of Object.entries(patterns)) {
    const regex = safeRegex(key, `${what} key`, "(?:.*\\.)?")
    if (Either.isLeft(regex)) return Either.left(regex.left)
    if (regex.right.test(module)) return Either.right(value)
  }
  return Either.right(undefined)
}

const layerIndex = (module: string): number | undefined => {
  const match = /(?:^|\.)layers\.(\d+)\./.exec(module)
  return match ? Number(match[1]) : undefined
}

/** The linear layers of a model an adapter could target: [name without `.weight`, in, out], the head excluded. */
const linearModules = (config: Qwen2Config): ReadonlyArray<readonly [string, number, number]> =>
  parameterSpecs(config)
    .filter((spec) => spec.transposed && spec.name !== "lm_head.weight")
    .map((spec) => [spec.name.slice(0, -".weight".length), spec.checkpointShape[1]!, spec.checkpointShape[0]!] as const)

/**
 * Which layers of `config`'s model `settings` adapts, and with what rank and scaling.
 * Fails with a sentence when nothing matches or a setting cannot apply.
 */
export const planLora = (config: Qwen2Config, settings: LoraSettings): Either.Either<LoraPlan, string> =>
  Either.gen(function* () {
    const candidates = linearModules(config)
    const targets = settings.target_modules
    const isTarget = targets === ALL_LINEAR
      ? () => true
      : yield* matcher(targets, "target_modules")
    const isExcluded = settings.exclude_modules === null ? () => false : yield* matcher(settings.exclude_modules, "exclude_modules")
    const layers = settings.layers_to_transform === null ? undefined : new Set(settings.layers_to_transform)
    const modules: Array<LoraModule> = []
    for (const [module, inFeatures, outFeatures] of candidates) {
      if (!isTarget(module) || isExcluded(module)) continue
      if (layers !== undefined && !layers.has(layerIndex(module) ?? -1)) continue
      const r = (yield* patternValue(settings.rank_pattern, module, "rank_pattern")) ?? settings.r
      const alpha = (yield* patternValue(settings.alpha_pattern, module, "alpha_pattern")) ?? settings.lora_alpha
      if (!Number.isInteger(r) || r < 1) return yield* Either.left(`the rank of ${module} is ${r}: r must be a whole number, 1 or more`)
      const scaling = settings.use_rslora ? alpha / Math.sqrt(r) : alpha / r
      modules.push({
        module,
        r,
        alpha,
        scaling,
        inFeatures,
        outFeatures,
        a: { name: loraAName(module), checkpointShape: [r, inFeatures], shape: [inFeatures, r], transposed: true },
        b: { name: loraBName(module), checkpointShape: [outFeatures, r], shape: [r, outFeatures], transposed: true }
      })
    }
    if (modules.length === 0) {
      const names = [...new Set(candidates.map(([module]) => module.split(".").at(-1)!))]
      return yield* Either.left(`target_modules ${JSON.stringify(targets)} matches no linear layer of this model (its linear layers: ${names.join(", ")}; or "${ALL_LINEAR}")`)
    }
    return {
      settings,
      modules,
      specs: modules.flatMap((m) => [m.a, m.b]),
      scaling: new Map(modules.map((m) => [m.module, m.scaling])),
      dropout: settings.lora_dropout
    } satisfies LoraPlan
  })

/** The short names of the adapted layers (`q_proj`, …), sorted: what adapter_config.json lists. */
export const targetNames = (plan: LoraPlan): ReadonlyArray<string> =>
  [...new Set(plan.modules.map((m) => m.module.split(".").at(-1)!))].sort()

/**
 * A fresh adapter, as PEFT initialises one: A ~ U(−1/√in, 1/√in) (kaiming-uniform with
 * a = √5 over fan-in), B = 0. Each module draws from its own stream of `seed`.
 */
export const initLoraWeights = (plan: LoraPlan, seed: number): Map<string, Float32Array> => {
  const weights = new Map<string, Float32Array>()
  plan.modules.forEach((m, index) => {
    const bound = 1 / Math.sqrt(m.inFeatures)
    // Drawn in PEFT's layout [r, in], then laid out as the model keeps A ([in, r]).
    const drawn = new KeyedStream([seed, LORA_STREAM, index]).uniform(m.r * m.inFeatures, -bound, bound)
    const a = new Float32Array(m.inFeatures * m.r)
    for (let row = 0; row < m.r; row++) {
      for (let col = 0; col < m.inFeatures; col++) a[col * m.r + row] = drawn[row * m.inFeatures + col]!
    }
    weights.set(m.a.name, a)
    weights.set(m.b.name, new Float32Array(m.r * m.outFeatures))
  })
  return weights
}

/** Stream-name words for KeyedStream keys, so that different uses of one seed never share draws. */
const LORA_STREAM = 0x4c6f5241 // "LoRA"

/**
 * Merges an adapter into base weights held in JS memory, in place: each adapted
 * module's weight becomes W + A B · scaling (model layout [in, out]), as PEFT's `merge()`
 * adds `(B @ A) * scaling`. The products run on the backend, one module at a time.
 */
export const mergeAdapter = (weights: Map<string, Float32Array>, plan: LoraPlan, adapter: ReadonlyMap<string, Float32Array>): void => {
  for (const m of plan.modules) {
    const name = `${m.module}.weight`
    const base = weights.get(name)
    const a = adapter.get(m.a.name)
    const b = adapter.get(m.b.name)
    if (base === undefined || a === undefined || b === undefined) throw new Error(`cannot merge ${m.module}: its weights are missing`)
    const merged = tf.tidy(() =>
      tf.add(tf.tensor2d(base, [m.inFeatures, m.outFeatures]), tf.mul(tf.matMul(tf.tensor2d(a, [m.inFeatures, m.r]), tf.tensor2d(b, [m.r, m.outFeatures])), m.scaling))
    )
    weights.set(name, (merged.dataSync() as Float32Array).slice())
    merged.dispose()
  }
}
