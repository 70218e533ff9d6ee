/**
 * LoRA as PEFT defines it: which layers a LoraConfig adapts, the initial weights, the
 * adapted model against golden numbers from PyTorch (tests/fixtures/lora-tiny, made by
 * its make.py on the qwen2-tiny fixture), merging, PEFT's folder format both ways,
 * the adapters we refuse, a frozen base, and NEFTune's noise.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Effect, Either } from "effect"
import { cpSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { type BackendName, initBackend } from "../src/backend/select.ts"
import { readAdapterFolder, writeAdapterFolder } from "../src/model/adapter-folder.ts"
import type { Qwen2Config } from "../src/model/config.ts"
import { loadHfFolder, readHfFolder } from "../src/model/hf-folder.ts"
import { lossAndGrads } from "../src/model/loss.ts"
import { DEFAULT_LORA, initLoraWeights, type LoraSettings, mergeAdapter, planLora } from "../src/model/lora.ts"
import { encodeHeader } from "../src/model/safetensors.ts"
import { forwardLogits, modelFromHost, type Qwen2 } from "../src/model/qwen2.ts"
import { readModelWeights } from "../src/model/source.ts"
import { AdamW, decays } from "../src/train/adamw.ts"
import { LayerwiseModel } from "../src/train/layerwise.ts"
import { neftuneNoise } from "../src/train/noise.ts"
import { updateStep } from "../src/train/trainer.ts"
import { runNode, runWithHub, tempDir } from "./helpers.ts"
import { goldenCollated, goldenLabels, goldenTokens, QWEN2_TINY } from "./support/golden.ts"

const BASE = QWEN2_TINY
const LORA_FIXTURE = join(__dirname, "fixtures/lora-tiny")
const loraGolden = JSON.parse(readFileSync(join(LORA_FIXTURE, "golden.json"), "utf8")) as {
  forward: { logits_seq0: Array<Array<number>>; logits_seq1_valid: Array<Array<number>>; loss: number }
  gradients: { per_parameter_l2_norm: Record<string, number>; global_l2_norm: number }
  adamw: { lr: number; weight_decay: number; max_grad_norm: number; loss_trajectory: Array<number> }
}

const tokens = goldenTokens
const labels = goldenLabels
const batch = goldenCollated

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  expect(a.length).toBe(b.length)
  let worst = 0
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!))
  return worst
}
const l2 = (values: ArrayLike<number>) => Math.sqrt(Array.from(values).reduce((sum, v) => sum + v * v, 0))

const run = <A, E>(effect: Effect.Effect<A, E, NodeContext.NodeContext>) => runNode(effect)
const settings = (overrides: Partial<LoraSettings>): LoraSettings => ({ ...DEFAULT_LORA, target_modules: ["q_proj", "v_proj"], ...overrides })

let config: Qwen2Config
let base: Map<string, Float32Array>

beforeAll(async () => {
  await initBackend({ backend: "cpu" })
  const host = await run(readHfFolder(BASE))
  config = host.config
  base = host.weights
})

const copy = (weights: ReadonlyMap<string, Float32Array>) => new Map([...weights].map(([name, values]) => [name, values.slice()]))

describe("which layers an adapter adapts (PEFT's target matching)", () => {
  const modules = (overrides: Partial<LoraSettings>) => Either.getOrThrow(planLora(config, settings(overrides))).modules.map((m) => m.module)

  it("names match a layer's own name, all-linear takes every linear layer but the head", () => {
    expect(modules({})).toEqual(["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"])
    const all = modules({ target_modules: "all-linear" })
    expect(all).toHaveLength(14)
    expect(all.some((m) => m.includes("lm_head") || m.includes("embed"))).toBe(false)
    expect(modules({ target_modules: ["model.layers.1.mlp.down_proj"] })).toEqual(["model.layers.1.mlp.down_proj"])
  })

  it("a string is a regular expression over the whole name", () => {
    expect(modules({ target_modules: ".*\\.layers\\.1\\..*_proj" })).toHaveLength(7)
    // A full match, as PEFT's re.fullmatch: no layer is named just q_proj.
    expect(Either.isLeft(planLora(config, settings({ target_modules: "q_proj" })))).toBe(true)
  })

  it("narrows with exclude_modules and layers_to_transform", () => {
    expect(modules({ target_modules: "all-linear", exclude_modules: ["k_proj", "o_proj", "mlp.up_proj", "mlp.gate_proj", "mlp.down_proj"] })).toHaveLength(4)
    expect(modules({ target_modules: "all-linear", layers_to_transform: [1] })).toEqual(expect.arrayContaining(["model.layers.1.mlp.up_proj"]))
    expect(modules({ target_modules: "all-linear", layers_to_transform: [1] })).toHaveLength(7)
  })

  it("rank and alpha patterns set a layer's own; rsLoRA scales by alpha / sqrt(r)", () => {
    const plan = Either.getOrThrow(planLora(config, settings({ r: 8, lora_alpha: 16, rank_pattern: { v_proj: 2 }, alpha_pattern: { "layers.1.self_attn.q_proj": 4 } })))
    const byName = new Map(plan.modules.map((m) => [m.module, m]))
    expect(byName.get("model.layers.0.self_attn.v_proj")).toMatchObject({ r: 2, alpha: 16, scaling: 8 })
    expect(byName.get("model.layers.1.self_attn.q_proj")).toMatchObject({ r: 8, alpha: 4, scaling: 0.5 })
    expect(byName.get("model.layers.0.self_attn.q_proj")).toMatchObject({ r: 8, scaling: 2 })
    expect(byName.get("model.layers.0.self_attn.v_proj")!.a).toMatchObject({ checkpointShape: [2, 64], shape: [64, 2] })
    const rs = Either.getOrThrow(planLora(config, settings({ r: 16, lora_alpha: 8, use_rslora: true })))
    expect(rs.modules[0]!.scaling).toBe(2)
  })

  it("says what is wrong: no layer matched, a regular expression that could run for ever", () => {
    expect(Either.getLeft(planLora(config, settings({ target_modules: ["qkv"] })))._tag).toBe("Some")
    expect(Either.getOrThrowWith(Either.flip(planLora(config, settings({ target_modules: ["qkv"] }))), () => "")).toMatch(
      /target_modules \["qkv"\] matches no linear layer of this model \(its linear layers: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; or "all-linear"\)/
    )
    expect(Either.getOrThrowWith(Either.flip(planLora(config, settings({ target_modules: "(a+)+$" }))), () => "")).toMatch(/nests one repetition inside another/)
  })
})

describe("a new adapter", () => {
  it("starts as PEFT's: A kaiming-uniform over fan-in, B zero; drawn from the seed", () => {
    const plan = Either.getOrThrow(planLora(config, settings({ r: 4 })))
    const weights = initLoraWeights(plan, 42)
    const a = weights.get("model.layers.0.self_attn.q_proj.lora_A.weight")!
    const bound = 1 / Math.sqrt(64)
    expect(Math.max(...a.map(Math.abs))).toBeLessThanOrEqual(bound)
    expect(Math.max(...a.map(Math.abs))).toBeGreaterThan(0.95 * bound)
    expect(weights.get("model.layers.0.self_attn.q_proj.lora_B.weight")!.every((v) => v === 0)).toBe(true)
    expect(initLoraWeights(plan, 42).get("model.layers.0.self_attn.q_proj.lora_A.weight")).toEqual(a)
    expect(initLoraWeights(plan, 43).get("model.layers.0.self_attn.q_proj.lora_A.weight")).not.toEqual(a)
  })

  it("with B = 0 gives the base model's logits exactly", () => {
    const plan = Either.getOrThrow(planLora(config, settings({ target_modules: "all-linear" })))
    const adapted = modelFromHost(config, new Map([...base, ...initLoraWeights(plan, 1)]), plan)
    const plain = modelFromHost(config, base)
    expect(forwardLogits(adapted, tokens).dataSync()).toEqual(forwardLogits(plain, tokens).dataSync())
  })
})

describe.each<BackendName>(["wasm", "cpu"])("the PyTorch golden adapter on %s", (backend) => {
  let adapter: Awaited<ReturnType<typeof loadFixtureAdapter>>
  const loadFixtureAdapter = () => run(readAdapterFolder(join(LORA_FIXTURE, "adapter"), config))

  beforeAll(async () => {
    await initBackend({ backend, threads: 1 })
    adapter = await loadFixtureAdapter()
  })

  it("reads PEFT's folder: r 4, lora_alpha 8, every linear layer", () => {
    expect(adapter.plan.modules).toHaveLength(14)
    expect(adapter.plan.modules.every((m) => m.r === 4 && m.scaling === 2)).toBe(true)
  })

  it("gives PyTorch's logits, loss and adapter gradients; merged, the same logits", () => {
    const model = modelFromHost(config, new Map([...base, ...adapter.weights]), adapter.plan)
    const logits = forwardLogits(model, tokens).arraySync()
    const [seq0, seq1] = logits
    expect(maxAbsDiff(seq0!.flat(), loraGolden.forward.logits_seq0.flat())).toBeLessThan(1e-5)
    expect(maxAbsDiff(seq1!.slice(0, 7).flat(), loraGolden.forward.logits_seq1_valid.flat())).toBeLessThan(1e-5)
    const { loss, grads } = lossAndGrads(model, tokens, labels)
    expect(Math.abs(loss - loraGolden.forward.loss)).toBeLessThan(1e-6)
    const expected = loraGolden.gradients.per_parameter_l2_norm
    expect([...grads.keys()].sort()).toEqual(Object.keys(expected).sort())
    for (const [name, grad] of grads) expect(Math.abs(l2(grad.dataSync()) - expected[name]!) / expected[name]!, name).toBeLessThan(1e-5)

    const merged = copy(base)
    mergeAdapter(merged, adapter.plan, adapter.weights)
    const mergedLogits = forwardLogits(modelFromHost(config, merged), tokens).arraySync()
    expect(maxAbsDiff(mergedLogits.flat(2), logits.flat(2))).toBeLessThan(1e-5)
  })

  it("trains like torch.optim.AdamW on the adapter alone, layer-wise and on the tape, the base untouched", () => {
    const { lr, weight_decay: weightDecay, max_grad_norm: maxGradNorm, loss_trajectory: want } = loraGolden.adamw
    const layerwise = new LayerwiseModel({ config, weights: copy(base), adapter: { plan: adapter.plan, weights: copy(adapter.weights) } })
    const model = modelFromHost(config, new Map([...base, ...adapter.weights]), adapter.plan)
    const [a, b] = [0, 1].map(() => new AdamW({ beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay }))
    expect(layerwise.trainable).toEqual(adapter.plan.specs.map((spec) => spec.name))
    for (let step = 0; step <= 10; step++) {
      const options = { normalizer: batch.labelTokens, lr: step < 10 ? lr : 0, maxGradNorm, decay: decays }
      const ours = layerwise.update(a!, [batch], options)
      const tape = updateStep(model, b!, [batch], options)
      expect(Math.abs(ours.loss - want[step]!), `step ${step}`).toBeLessThan(1e-5)
      expect(Math.abs(tape.loss - want[step]!), `step ${step}`).toBeLessThan(1e-5)
    }
    // The Trainer's grouping decays LoRA matrices (no bias or norm among them).
    expect(adapter.plan.specs.every((spec) => decays(spec.name))).toBe(true)
    for (const [name, values] of base) {
      expect(layerwise.weights.get(name), name).toEqual(values)
      expect(model.params.get(name)!.dataSync(), name).toEqual(values)
    }
    expect(maxAbsDiff(layerwise.weights.get(adapter.plan.specs[1]!.name)!, adapter.weights.get(adapter.plan.specs[1]!.name)!)).toBeGreaterThan(1e-4)
  })
})

describe("adapter folders", () => {
  it("written and read back bit for bit, in PEFT's layout", async () => {
    const plan = Either.getOrThrow(planLora(config, settings({ r: 4, lora_alpha: 16, lora_dropout: 0.05, target_modules: "all-linear" })))
    const weights = initLoraWeights(plan, 5)
    for (const m of plan.modules) weights.set(m.b.name, Float32Array.from({ length: m.r * m.outFeatures }, (_, i) => Math.sin(i) / 7))
    const dir = tempDir()
    await run(writeAdapterFolder(dir, plan, weights, { base: { nameOrPath: "Qwen/Qwen2.5-0.5B", revision: "a".repeat(40) } }))
    const json = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8")) as Record<string, unknown>
    expect(json).toMatchObject({
      peft_type: "LORA",
      task_type: "CAUSAL_LM",
      base_model_name_or_path: "Qwen/Qwen2.5-0.5B",
      revision: "a".repeat(40),
      r: 4,
      lora_alpha: 16,
      lora_dropout: 0.05,
      target_modules: ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
      bias: "none",
      use_rslora: false,
      use_dora: false
    })
    const file = readFileSync(join(dir, "adapter_model.safetensors"))
    const header = JSON.parse(file.subarray(8, 8 + Number(file.readBigUInt64LE(0))).toString()) as Record<string, { shape: Array<number> }>
    expect(header["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]!.shape).toEqual([4, 64])
    expect(header["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]!.shape).toEqual([64, 4])
    const back = await run(readAdapterFolder(dir, config))
    expect(back.base).toEqual({ nameOrPath: "Qwen/Qwen2.5-0.5B", revision: "a".repeat(40) })
    expect(back.plan.dropout).toBe(0.05)
    for (const [name, values] of weights) expect(back.weights.get(name), name).toEqual(values)
  })

  it("reads a folder written as PEFT writes it, unknown keys and all", async () => {
    const dir = tempDir()
    const a = Float32Array.from({ length: 2 * 64 }, (_, i) => i / 100) // [r=2, in=64], PEFT's layout
    const b = Float32Array.from({ length: 128 * 2 }, (_, i) => -i / 100) // [out=128, r=2]: k_proj of qwen2-tiny is 64 → 32
    const kOut = config.num_key_value_heads * config.head_dim
    const bk = b.subarray(0, kOut * 2)
    const tensors = [
      { name: "base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight", shape: [2, 64], data: a },
      { name: "base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight", shape: [kOut, 2], data: bk }
    ]
    writeFileSync(join(dir, "adapter_model.safetensors"), Buffer.concat([Buffer.from(encodeHeader(tensors, { format: "pt" })), ...tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))]))
    writeFileSync(join(dir, "adapter_config.json"), JSON.stringify({
      alpha_pattern: {}, auto_mapping: null, base_model_name_or_path: BASE, bias: "none", eva_config: null, exclude_modules: null,
      fan_in_fan_out: false, inference_mode: true, init_lora_weights: true, layer_replication: null, layers_pattern: null,
      layers_to_transform: [1], loftq_config: {}, lora_alpha: 4, lora_bias: false, lora_dropout: 0.0, megatron_config: null,
      megatron_core: "megatron.core", modules_to_save: null, peft_type: "LORA", r: 2, rank_pattern: {}, revision: null,
      target_modules: ["k_proj"], task_type: "CAUSAL_LM", use_dora: false, use_rslora: false
    }))
    const read = await run(readAdapterFolder(dir, config))
    expect(read.plan.modules.map((m) => [m.module, m.scaling])).toEqual([["model.layers.1.self_attn.k_proj", 2]])
    // Model layout is the transpose: A [in, r], B [r, out].
    const am = read.weights.get("model.layers.1.self_attn.k_proj.lora_A.weight")!
    expect(am[1 * 2 + 0]).toBeCloseTo(a[0 * 64 + 1]!, 7)
    expect(am[5 * 2 + 1]).toBeCloseTo(a[1 * 64 + 5]!, 7)
    const bm = read.weights.get("model.layers.1.self_attn.k_proj.lora_B.weight")!
    expect(bm[1 * kOut + 3]).toBeCloseTo(bk[3 * 2 + 1]!, 7)
    // Its config names its base: reading the folder as a model merges it in.
    const merged = await runWithHub(readModelWeights(dir))
    const expected = copy(base)
    mergeAdapter(expected, read.plan, read.weights)
    expect(merged.weights.get("model.layers.1.self_attn.k_proj.weight")).toEqual(expected.get("model.layers.1.self_attn.k_proj.weight"))
    expect(merged.weights.get("model.layers.1.self_attn.k_proj.weight")).not.toEqual(base.get("model.layers.1.self_attn.k_proj.weight"))
  })

  it("refuses what it cannot honour, saying why", async () => {
    const refuse = async (change: (config: Record<string, unknown>) => void, pattern: RegExp) => {
      const dir = tempDir()
      cpSync(join(LORA_FIXTURE, "adapter"), dir, { recursive: true })
      const file = join(dir, "adapter_config.json")
      const json = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>
      change(json)
      writeFileSync(file, JSON.stringify(json))
      const error = await run(Effect.flip(readAdapterFolder(dir, config)))
      expect(error.message).toMatch(pattern)
    }
    await refuse((c) => (c.use_dora = true), /use_dora is true: DoRA adapters are not supported/)
    await refuse((c) => (c.bias = "all"), /bias is "all": adapters that train biases are not supported/)
    await refuse((c) => (c.modules_to_save = ["lm_head"]), /modules_to_save \["lm_head"\]: adapters that carry fully trained modules are not supported/)
    await refuse((c) => (c.peft_type = "IA3"), /peft_type is IA3; only LORA adapters are supported/)
    await refuse((c) => (c.r = "four"), /r: Expected number/)
    await refuse((c) => (c.target_modules = ["q_proj"]), /holds tensors its adapter_config.json does not account for on this model: base_model\.model\.model\.layers\.0\.self_attn\.k_proj\.lora_A\.weight/)
    await refuse((c) => (c.r = 8), /tensor base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight has shape \[4, 64\], the model expects \[8, 64\]/)
  })
})

describe("NEFTune", () => {
  it("draws uniform noise within alpha / sqrt(L·d), the same for the same step, absent from evaluation", async () => {
    await initBackend({ backend: "wasm", threads: 1 })
    const key = { seed: 1, step: 4, micro: 0 }
    const noise = neftuneNoise(5, key, batch.size * batch.length, batch.length, 64)
    const bound = 5 / Math.sqrt(batch.length * 64)
    expect(Math.max(...noise.map(Math.abs))).toBeLessThanOrEqual(bound)
    expect(Math.max(...noise.map(Math.abs))).toBeGreaterThan(0.99 * bound)
    expect(Math.abs(noise.reduce((a, b) => a + b, 0) / noise.length)).toBeLessThan(bound / 20)
    expect(neftuneNoise(5, key, batch.size * batch.length, batch.length, 64)).toEqual(noise)
    expect(neftuneNoise(5, { ...key, step: 5 }, batch.size * batch.length, batch.length, 64)).not.toEqual(noise)
    const model = new LayerwiseModel({ config, weights: copy(base) })
    const plain: Qwen2 = (await run(loadHfFolder(BASE))).model
    const evalLoss = model.evalLoss(batch)
    const { loss } = lossAndGrads(plain, tokens, labels)
    expect(Math.abs(evalLoss - loss)).toBeLessThan(1e-6)
    const noisy = model.accumulate(batch, batch.labelTokens, { key, neftuneAlpha: 5 })
    expect(Math.abs(noisy - loss)).toBeGreaterThan(1e-4)
    expect(model.evalLoss(batch)).toBe(evalLoss)
  })
})
