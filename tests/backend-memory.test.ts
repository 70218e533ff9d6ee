/**
 * The memory check, from configs alone: Qwen2.5-0.5B (its real config) runs on wasm but
 * cannot train there, and the refusal gives the figures and the backends that would fit.
 */
import { Effect, Either } from "effect"
import { readFileSync } from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"
import { checkMemoryFit, estimateMemory, ModelTooLarge } from "../src/backend/memory.ts"
import { decodeConfig } from "../src/model/config.ts"

const GIB = 1024 ** 3

const qwen25_05b = Effect.runSync(
  decodeConfig(
    {
      architectures: ["Qwen2ForCausalLM"],
      hidden_size: 896,
      intermediate_size: 4864,
      max_position_embeddings: 32768,
      num_attention_heads: 14,
      num_hidden_layers: 24,
      num_key_value_heads: 2,
      rms_norm_eps: 1e-6,
      rope_theta: 1000000,
      tie_word_embeddings: true,
      vocab_size: 151936
    },
    "Qwen2.5-0.5B"
  )
)

const tiny = Effect.runSync(
  decodeConfig(JSON.parse(readFileSync(path.resolve(__dirname, "../../shared/fixtures/qwen2-tiny/config.json"), "utf8")), "tiny")
)

describe("memory estimate", () => {
  it("counts parameters as transformers does", () => {
    expect(estimateMemory(qwen25_05b, { training: false }).parameters).toBe(494_032_768)
    expect(estimateMemory(tiny, { training: false }).parameters).toBe(125_504) // the fixture's safetensors header sums to this
  })

  it("adds gradients, the optimizer and the head's backward copies only when training", () => {
    const run = estimateMemory(qwen25_05b, { training: false })
    const train = estimateMemory(qwen25_05b, { training: true })
    expect(train.gradientBytes).toBe(run.weightBytes)
    expect(train.optimizerBytes).toBe(2 * run.weightBytes)
    expect(train.packedBytes - run.packedBytes).toBe(151936 * 896 * 4)
    expect(train.wasmHeapBytes).toBeGreaterThan(5 * GIB)
  })
})

describe("memory check", () => {
  const hostBytes = 32 * GIB

  it("lets Qwen2.5-0.5B run on wasm and the tiny model train there", () => {
    expect(Either.isRight(Effect.runSync(Effect.either(checkMemoryFit(qwen25_05b, "wasm", { training: false, hostBytes }))))).toBe(true)
    const tinyTraining = { training: true, tokensPerStep: 1024, seqLen: 256, hostBytes }
    expect(Either.isRight(Effect.runSync(Effect.either(checkMemoryFit(tiny, "wasm", tinyTraining))))).toBe(true)
  })

  it("refuses to train Qwen2.5-0.5B on wasm, with the figures and where it would fit", () => {
    const refused = Effect.runSync(Effect.flip(checkMemoryFit(qwen25_05b, "wasm", { training: true, hostBytes })))
    expect(refused).toBeInstanceOf(ModelTooLarge)
    expect(refused.fits).toEqual(["tensorflow", "cpu"])
    expect(refused.message).toBe(
      "Qwen2ForCausalLM with 494.0M parameters needs about 5.52 GiB on the wasm heap to train " +
        "(weights 1.84 GiB + gradients 1.84 GiB + packed matmul weights 1.84 GiB), " +
        "but the wasm heap is capped at 4,294,901,760 bytes (4.00 GiB). " +
        "It would fit on: tensorflow, cpu (tensorflow needs @tensorflow/tfjs-node)."
    )
  })

  it("refuses on every backend when host memory is short too", () => {
    const refused = Effect.runSync(Effect.flip(checkMemoryFit(qwen25_05b, "cpu", { training: true, hostBytes: 4 * GIB })))
    expect(refused.fits).toEqual([])
    expect(refused.message).toMatch(/needs about 7\.36 GiB of memory to train .* but this machine has 4\.00 GiB to plan with\. It fits on no backend here/)
  })
})
