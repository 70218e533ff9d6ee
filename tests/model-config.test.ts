/**
 * config.json decoding: the fixture's own config, transformers' defaults, Llama's bias
 * flag, and clear errors for what we cannot run.
 */
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"
import { configJson, decodeConfig, eosTokenIds } from "../src/model/config.ts"
import { parameterSpecs } from "../src/model/params.ts"

const fixture = JSON.parse(readFileSync(path.resolve(__dirname, "../../shared/fixtures/qwen2-tiny/config.json"), "utf8")) as Record<
  string,
  unknown
>

const decode = (json: unknown) => Effect.runSync(decodeConfig(json, "config.json"))
const failure = (json: unknown) => Effect.runSync(Effect.flip(decodeConfig(json, "config.json"))).message

const minimal = {
  architectures: ["Qwen2ForCausalLM"],
  vocab_size: 100,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 4
}

describe("decodeConfig", () => {
  it("reads the fixture", () => {
    expect(decode(fixture)).toEqual({
      architecture: "Qwen2ForCausalLM",
      model_type: "qwen2",
      vocab_size: 512,
      hidden_size: 64,
      intermediate_size: 176,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 16,
      hidden_act: "silu",
      max_position_embeddings: 128,
      initializer_range: 0.1,
      rms_norm_eps: 1e-6,
      rope_theta: 1e6,
      tie_word_embeddings: true,
      attention_bias: false,
      bos_token_id: null,
      eos_token_id: null,
      pad_token_id: null
    })
  })

  it("fills in transformers' Qwen2Config defaults", () => {
    const config = decode(minimal)
    expect(config).toMatchObject({
      num_key_value_heads: 4,
      rope_theta: 10000,
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      max_position_embeddings: 32768,
      initializer_range: 0.02
    })
    expect(parameterSpecs(config).at(-1)?.name).toBe("lm_head.weight")
  })

  it("accepts Llama, with biases on q/k/v/o only when attention_bias is set", () => {
    const names = (json: object) => parameterSpecs(decode(json)).map((spec) => spec.name).filter((name) => name.endsWith(".bias"))
    const llama = { ...minimal, architectures: ["LlamaForCausalLM"] }
    expect(names(llama)).toEqual([])
    expect(names({ ...llama, attention_bias: true })).toEqual(["q", "k", "v", "o"].map((p) => `model.layers.0.self_attn.${p}_proj.bias`))
    expect(names(minimal)).toEqual(["q", "k", "v"].map((p) => `model.layers.0.self_attn.${p}_proj.bias`))
  })

  it("normalises EOS ids and round-trips through configJson", () => {
    expect(eosTokenIds(decode({ ...minimal, eos_token_id: [3, 4] }))).toEqual([3, 4])
    expect(eosTokenIds(decode({ ...minimal, eos_token_id: 5 }))).toEqual([5])
    const written = configJson(decode(fixture), fixture)
    expect(decode(JSON.parse(JSON.stringify(written)))).toEqual(decode(fixture))
    expect(written).toMatchObject({ architectures: ["Qwen2ForCausalLM"], model_type: "qwen2", use_sliding_window: false })
  })

  it("refuses an unsupported architecture, naming it and what is supported", () => {
    expect(failure({ ...minimal, architectures: ["MistralForCausalLM"] })).toBe(
      "config.json: unsupported architecture MistralForCausalLM (supported: Qwen2ForCausalLM, LlamaForCausalLM)"
    )
  })

  it("lists every invalid field", () => {
    const message = failure({ ...minimal, hidden_size: -16, vocab_size: "many" })
    expect(message).toMatch(/^config\.json: /)
    expect(message).toMatch(/vocab_size: Expected number, actual "many"/)
    expect(message).toMatch(/hidden_size: Expected a positive number, actual -16/)
  })

  it("refuses shapes and options it cannot run", () => {
    expect(failure({ ...minimal, num_key_value_heads: 3 })).toMatch(/num_attention_heads 4 is not a multiple of num_key_value_heads 3/)
    expect(failure({ ...minimal, hidden_size: 18 })).toMatch(/hidden_size 18 is not a multiple of num_attention_heads 4/)
    expect(failure({ ...minimal, hidden_act: "gelu" })).toMatch(/hidden_act gelu is not supported/)
    expect(failure({ ...minimal, rope_scaling: { rope_type: "yarn", factor: 4 } })).toMatch(/rope_scaling .* is not supported/)
  })
})
