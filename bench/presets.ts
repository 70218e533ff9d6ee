/**
 * The model presets the benchmark trains, the same as ../shared/anchor/bench_torch.py's:
 * Qwen2.5-0.5B's configuration, with a preset's fields laid over it. `qwen2.5-0.5b` is
 * the whole model (bench_torch.py's slice preset with `--layers 24`).
 */
import { Effect } from "effect"
import { decodeConfig, type Qwen2Config } from "../src/model/config.ts"
import { parameterSpecs } from "../src/model/params.ts"
import { KeyedStream } from "../src/random.ts"

const QWEN25_05B = {
  architectures: ["Qwen2ForCausalLM"],
  vocab_size: 151936,
  hidden_size: 896,
  intermediate_size: 4864,
  num_hidden_layers: 24,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1_000_000,
  max_position_embeddings: 32768,
  tie_word_embeddings: true,
  initializer_range: 0.02
}

export const PRESETS = {
  tiny: {
    vocab_size: 512,
    hidden_size: 64,
    intermediate_size: 176,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2
  },
  small: {
    vocab_size: 151936,
    hidden_size: 256,
    intermediate_size: 704,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2
  },
  "qwen2.5-0.5b-slice": { num_hidden_layers: 2 },
  "qwen2.5-0.5b": {}
} as const

export type PresetName = keyof typeof PRESETS

/** What bench_torch.py calls a preset: the whole 0.5B is its slice with 24 layers. */
export const torchPreset = (name: PresetName): { preset: string; layers?: number } =>
  name === "qwen2.5-0.5b" ? { preset: "qwen2.5-0.5b-slice", layers: 24 } : { preset: name }
export const PRESET_NAMES = Object.keys(PRESETS) as ReadonlyArray<PresetName>

export const isPreset = (name: string): name is PresetName => Object.hasOwn(PRESETS, name)

export const presetConfig = (name: PresetName, layers?: number): Promise<Qwen2Config> =>
  Effect.runPromise(decodeConfig({
    ...QWEN25_05B,
    ...PRESETS[name],
    ...(layers !== undefined && { num_hidden_layers: layers })
  }, `preset ${name}`))

/**
 * Weights for a preset, in JS memory (model layout): uniform in ±0.04 where transformers
 * draws normal ones, ones and zeros where it puts them. Drawn in JS, so that nothing
 * touches the backend before the training step being measured (its heap peak is the step's).
 */
export const randomHostWeights = (config: Qwen2Config, seed = 0): Map<string, Float32Array> =>
  new Map(parameterSpecs(config).map((spec, index) => {
    const size = spec.shape.reduce((a, b) => a * b, 1)
    const values = spec.init === "normal" ? new KeyedStream([seed, index]).uniform(size, -0.04, 0.04) : new Float32Array(size).fill(spec.init === "ones" ? 1 : 0)
    return [spec.name, values]
  }))
