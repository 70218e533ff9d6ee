/**
 * The memory checks, from configs alone. Inference holds the whole model on the backend;
 * layer-wise training holds the head and one layer at a time, with the rest in JS memory.
 * Qwen2.5-0.5B (its real config) runs on wasm and trains there at the tutorial's batch,
 * fully and with LoRA; what cannot fit is refused with the figures and what to change.
 * The figures themselves were fitted to the heap measured by the benchmark (bench/NOTES.md).
 */
import { Effect, Either } from "effect"
import { readFileSync } from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"
import { checkMemoryFit, checkTrainingFit, estimateInference, estimateTraining, ModelTooLarge } from "../src/backend/memory.ts"
import { WASM_HEAP_MAX_BYTES } from "../src/backend/wasm-internals.ts"
import { decodeConfig } from "../src/model/config.ts"
import { DEFAULT_LORA, planLora } from "../src/model/lora.ts"

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

const lora16 = Either.getOrThrow(planLora(qwen25_05b, { ...DEFAULT_LORA, r: 16, lora_alpha: 32, target_modules: "all-linear" }))

describe("memory estimate", () => {
  it("counts parameters as transformers and PEFT do", () => {
    expect(estimateInference(qwen25_05b).parameters).toBe(494_032_768)
    expect(estimateInference(tiny).parameters).toBe(125_504) // the fixture's safetensors header sums to this
    // PEFT's print_trainable_parameters for r 16 on all linear layers of Qwen2.5-0.5B.
    expect(estimateTraining(qwen25_05b, { adapter: lora16, batchSize: 1, seqLen: 1 }).trainable).toBe(8_798_208)
  })

  it("keeps gradients and AdamW moments for what trains only, in JS memory", () => {
    const full = estimateTraining(qwen25_05b, { batchSize: 5, seqLen: 512 })
    const lora = estimateTraining(qwen25_05b, { adapter: lora16, batchSize: 5, seqLen: 512 })
    expect(full.gradientBytes).toBe(494_032_768 * 4)
    expect(full.optimizerBytes).toBe(2 * full.gradientBytes)
    expect(lora.gradientBytes).toBe(8_798_208 * 4)
    // The activations kept between the passes are the same, but for the adapter's own (x A, r per layer).
    expect(lora.activationBytes / full.activationBytes).toBeGreaterThan(1)
    expect(lora.activationBytes / full.activationBytes).toBeLessThan(1.01)
  })

  it("puts the head and one layer on the wasm heap, whatever the depth", () => {
    const shallow = Effect.runSync(decodeConfig({ ...qwen25_05b, architectures: ["Qwen2ForCausalLM"], num_hidden_layers: 2 }, "slice"))
    const deep = estimateTraining(qwen25_05b, { batchSize: 5, seqLen: 512 })
    expect(estimateTraining(shallow, { batchSize: 5, seqLen: 512 }).backendPeakBytes).toBe(deep.backendPeakBytes)
    // The tied embedding and XNNPACK's packed copy of it stay: 1.01 GiB at Qwen2.5's vocabulary.
    expect(deep.residentBytes / GIB).toBeCloseTo(1.014, 2)
    // The tutorial's batch, as measured: 2.07 GiB (full) and 1.85 GiB (LoRA) on the heap at its peak.
    expect(deep.backendPeakBytes / GIB).toBeGreaterThan(1.85 * 0.85)
    expect(deep.backendPeakBytes / GIB).toBeLessThan(2.07 * 1.15)
  })
})

describe("memory check", () => {
  const hostBytes = 32 * GIB

  it("lets Qwen2.5-0.5B run on wasm, and train there at the tutorial's batch, fully or with LoRA", () => {
    expect(Either.isRight(Effect.runSync(Effect.either(checkMemoryFit(qwen25_05b, "wasm", { hostBytes }))))).toBe(true)
    for (const adapter of [undefined, lora16]) {
      const fit = Effect.runSync(Effect.either(checkTrainingFit(qwen25_05b, "wasm", { adapter, batchSize: 5, seqLen: 512, hostBytes })))
      expect(Either.isRight(fit)).toBe(true)
    }
  })

  it("refuses a batch whose layer pass overflows the heap, with the figures and what to change", () => {
    const refused = Effect.runSync(Effect.flip(checkTrainingFit(qwen25_05b, "wasm", { batchSize: 8, seqLen: 2048, hostBytes: 128 * GIB })))
    expect(refused).toBeInstanceOf(ModelTooLarge)
    expect(refused.fits).toEqual(["tensorflow", "cpu"])
    expect(refused.message).toMatch(
      /^Training every weight of Qwen2ForCausalLM \(494\.0M parameters\) on batches of 8 × 2048 tokens needs about \d+\.\d\d GiB on the wasm heap at its peak \(one layer's pass\) and \d+\.\d\d GiB of memory in all \(weights 1\.84 GiB, gradients 1\.84 GiB, AdamW moments 3\.68 GiB, activations kept for the backward pass \d+\.\d\d GiB\), but the wasm heap is capped at 4,294,901,760 bytes \(4\.00 GiB\)\. It would fit on: tensorflow, cpu/
    )
    expect(estimateTraining(qwen25_05b, { batchSize: 8, seqLen: 2048 }).backendPeakBytes).toBeGreaterThan(WASM_HEAP_MAX_BYTES)
  })

  it("refuses on every backend when host memory is short, suggesting LoRA when the optimizer's state is what overflows", () => {
    const refused = Effect.runSync(Effect.flip(checkTrainingFit(qwen25_05b, "wasm", { batchSize: 1, seqLen: 128, hostBytes: 6 * GIB })))
    expect(refused.fits).toEqual([])
    expect(refused.message).toMatch(/this machine has 6\.00 GiB to plan with\. Lower batch_size .*, or train a LoRA adapter \(lora:\)\.$/)
    expect(Either.isRight(Effect.runSync(Effect.either(checkTrainingFit(qwen25_05b, "wasm", { adapter: lora16, batchSize: 1, seqLen: 128, hostBytes: 6 * GIB }))))).toBe(true)
    const inference = Effect.runSync(Effect.flip(checkMemoryFit(qwen25_05b, "cpu", { hostBytes: 2 * GIB })))
    expect(inference.message).toMatch(/needs about 1\.84 GiB of memory to run \(weights 1\.84 GiB\), but this machine has 2\.00 GiB to plan with\. It fits on no backend here/)
  })
})
