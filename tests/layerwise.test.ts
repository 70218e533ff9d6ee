/**
 * The layer-wise loop (src/train/layerwise.ts, with the hand-written backward of
 * src/model/backward.ts) against the tape (`lossAndGrads` / `updateStep` over a whole
 * model), on the qwen2-tiny fixture, on wasm and cpu: the same loss and gradients,
 * fully and with LoRA, with dropout and NEFTune's noise; the same weights after AdamW
 * steps; and the fixture's golden AdamW trajectory from transformers.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Either } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { type BackendName, initBackend } from "../src/backend/select.ts"
import { loadHfFolder } from "../src/model/hf-folder.ts"
import { lossAndGrads } from "../src/model/loss.ts"
import { DEFAULT_LORA, initLoraWeights, type LoraPlan, planLora } from "../src/model/lora.ts"
import { createModel, type Qwen2 } from "../src/model/qwen2.ts"
import { KeyedStream } from "../src/random.ts"
import { AdamW } from "../src/train/adamw.ts"
import { type Batch, collate } from "../src/train/collate.ts"
import { LayerwiseModel } from "../src/train/layerwise.ts"
import { dropoutMask, neftuneNoise } from "../src/train/noise.ts"
import { updateStep } from "../src/train/trainer.ts"
import { goldenCollated, goldenJson, QWEN2_TINY } from "./support/golden.ts"

const FIXTURE = QWEN2_TINY
const golden = goldenJson<{ forward: { loss: number }; adamw_same_batch_clip1: { loss_trajectory: Array<number> } }>()

/** The fixture's batch as the trainer collates it (right padding with id 0). */
const batch: Batch = goldenCollated
const tokens = { batchSize: batch.size, seqLen: batch.length, inputIds: batch.inputIds, attentionMask: batch.attentionMask }

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  expect(a.length).toBe(b.length)
  let worst = 0
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!))
  return worst
}

const hostCopy = (weights: ReadonlyMap<string, Float32Array>) => new Map([...weights].map(([name, values]) => [name, values.slice()]))

/** An adapter on every linear layer, with B drawn at random so that it changes the model. */
const randomAdapter = (model: Qwen2, dropout: number): { plan: LoraPlan; weights: Map<string, Float32Array> } => {
  const plan = Either.getOrThrow(planLora(model.config, { ...DEFAULT_LORA, r: 4, lora_alpha: 8, lora_dropout: dropout, target_modules: "all-linear" }))
  const weights = initLoraWeights(plan, 3)
  const draws = new KeyedStream([9])
  for (const m of plan.modules) weights.set(m.b.name, draws.uniform(m.r * m.outFeatures, -0.1, 0.1))
  return { plan, weights }
}

describe.each<BackendName>(["wasm", "cpu"])("the layer-wise loop on %s", (backend) => {
  let base: Qwen2
  let host: Map<string, Float32Array>

  beforeAll(async () => {
    await initBackend({ backend, threads: 1 })
    base = (await Effect.runPromise(loadHfFolder(FIXTURE).pipe(Effect.provide(NodeContext.layer)))).model
    host = new Map([...base.params].map(([name, variable]) => [name, (variable.dataSync() as Float32Array).slice()]))
  })

  it("gives the tape's loss and every gradient within 1e-6", () => {
    const reference = lossAndGrads(base, tokens, batch.labels, { normalizer: batch.labelTokens })
    const layerwise = new LayerwiseModel({ config: base.config, weights: hostCopy(host) })
    const loss = layerwise.accumulate(batch, batch.labelTokens)
    expect(Math.abs(loss - reference.loss)).toBeLessThan(1e-6)
    expect(Math.abs(loss - golden.forward.loss)).toBeLessThan(1e-6)
    expect([...layerwise.grads.keys()].sort()).toEqual([...reference.grads.keys()].sort())
    for (const [name, grad] of reference.grads) {
      expect(maxAbsDiff(grad.dataSync(), layerwise.grads.get(name)!), name).toBeLessThan(1e-6)
      grad.dispose()
    }
    layerwise.dispose()
  })

  it("with a LoRA adapter, dropout and NEFTune: the adapter's gradients alone, as the tape gives them", () => {
    const { plan, weights } = randomAdapter(base, 0.1)
    const model = createModel(base.config, (spec) => tf.tensor(host.get(spec.name) ?? weights.get(spec.name)!, [...spec.shape]), plan)
    const layerwise = new LayerwiseModel({ config: base.config, weights: hostCopy(host), adapter: { plan, weights: hostCopy(weights) } })
    const key = { seed: 7, step: 3, micro: 1 }
    const rows = batch.size * batch.length
    const moduleIndex = new Map(plan.modules.map((m, i) => [m.module, i]))
    const reference = lossAndGrads(model, tokens, batch.labels, {
      normalizer: batch.labelTokens,
      embeddingNoise: neftuneNoise(5, key, rows, batch.length, base.config.hidden_size),
      dropout: (module, x) => tf.mul(x, tf.tensor2d(dropoutMask(0.1, key, moduleIndex.get(module)!, rows, x.shape[1]), x.shape))
    })
    const loss = layerwise.accumulate(batch, batch.labelTokens, { key, neftuneAlpha: 5 })
    expect(Math.abs(loss - reference.loss)).toBeLessThan(1e-6)
    // Noise and dropout changed the loss: they were applied, on both sides.
    expect(Math.abs(loss - layerwise.evalLoss(batch))).toBeGreaterThan(1e-3)
    expect([...layerwise.grads.keys()].sort()).toEqual(plan.specs.map((spec) => spec.name).sort())
    expect([...reference.grads.keys()].sort()).toEqual(plan.specs.map((spec) => spec.name).sort())
    for (const [name, grad] of reference.grads) {
      expect(maxAbsDiff(grad.dataSync(), layerwise.grads.get(name)!), name).toBeLessThan(1e-6)
      grad.dispose()
    }
    layerwise.dispose()
    model.params.forEach((variable) => variable.dispose())
  })

  it("ends 10 AdamW steps with the tape's losses and weights, and transformers' trajectory", () => {
    const model = createModel(base.config, (spec) => tf.tensor(host.get(spec.name)!, [...spec.shape]))
    const layerwise = new LayerwiseModel({ config: base.config, weights: hostCopy(host) })
    const adamw = () => new AdamW({ beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 })
    const [tapeOptimizer, layerwiseOptimizer] = [adamw(), adamw()]
    // The golden run decays every parameter (plain torch.optim.AdamW) and clips at 1.0.
    const options = { normalizer: batch.labelTokens, lr: 1e-3, maxGradNorm: 1, decay: () => true }
    for (let step = 0; step < 10; step++) {
      const tape = updateStep(model, tapeOptimizer, [batch], options)
      const ours = layerwise.update(layerwiseOptimizer, [batch], options)
      expect(Math.abs(ours.loss - tape.loss), `step ${step}`).toBeLessThan(1e-6)
      expect(Math.abs(ours.loss - golden.adamw_same_batch_clip1.loss_trajectory[step]!), `step ${step}`).toBeLessThan(1e-5)
      expect(Math.abs(ours.norm - tape.norm) / tape.norm).toBeLessThan(1e-6)
    }
    // Adam divides each gradient by its own magnitude: where a gradient is 1e-6 of the
    // largest, float32 rounding (1e-8 of the largest) becomes a weight difference of about
    // 1e-6 after the first step. Bugs move weights by the learning rate (1e-3). k_proj's
    // bias has no gradient at all in exact arithmetic (a shift of every key leaves the
    // softmax unchanged): Adam normalises pure rounding there, differently on each side,
    // and it changes no output.
    for (const [name, variable] of model.params) {
      const tolerance = name.endsWith("k_proj.bias") ? 10 * options.lr : 5e-6
      expect(maxAbsDiff(variable.dataSync(), layerwise.weights.get(name)!), name).toBeLessThan(tolerance)
    }
    layerwise.dispose()
    model.params.forEach((variable) => variable.dispose())
  })

  it("accumulates micro-batches as one batch: the sum of two halves' gradients is the whole's", () => {
    const halves = [0, 1].map((row) => collate([{ inputIds: batch.inputIds.slice(row * batch.length, row * batch.length + golden.batch.lengths[row]!), labels: batch.labels.slice(row * batch.length, row * batch.length + golden.batch.lengths[row]!) }], 0))
    const whole = new LayerwiseModel({ config: base.config, weights: hostCopy(host) })
    const split = new LayerwiseModel({ config: base.config, weights: hostCopy(host) })
    const wholeLoss = whole.accumulate(batch, batch.labelTokens)
    const splitLoss = halves.reduce((sum, half) => sum + split.accumulate(half, batch.labelTokens), 0)
    expect(Math.abs(splitLoss - wholeLoss)).toBeLessThan(1e-6)
    for (const [name, grad] of whole.grads) expect(maxAbsDiff(grad, split.grads.get(name)!), name).toBeLessThan(1e-6)
  })
})
