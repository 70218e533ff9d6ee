/**
 * No model code path exists only for wasm. tfjs-node cannot be installed here, so its
 * users would run code nobody ran: the generic paths beside every wasm fast path
 * (src/backend/in-place.ts). This runs the model, the trainer, LoRA and the layer-wise
 * loop on them, against transformers' and PyTorch's numbers: on cpu, and on wasm with
 * the fast paths switched off (PIPELINE_WASM_FAST_PATHS=0), and checks that not one fast
 * path was taken.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { fastPathUses } from "../src/backend/in-place.ts"
import { initBackend } from "../src/backend/select.ts"
import { readAdapterFolder } from "../src/model/adapter-folder.ts"
import { loadHfFolder } from "../src/model/hf-folder.ts"
import { lossAndGrads } from "../src/model/loss.ts"
import { forwardLogits, modelFromHost, type Qwen2 } from "../src/model/qwen2.ts"
import { AdamW, decays } from "../src/train/adamw.ts"
import { LayerwiseModel } from "../src/train/layerwise.ts"
import { updateStep } from "../src/train/trainer.ts"
import { runNode } from "./helpers.ts"
import { goldenCollated, goldenJson, goldenLabels, goldenTokens, QWEN2_TINY } from "./support/golden.ts"

const FIXTURE = QWEN2_TINY
const golden = goldenJson<{
  forward: { logits_seq0: Array<Array<number>>; loss: number }
  gradients: { global_l2_norm: number }
  adamw_same_batch_clip1: { loss_trajectory: Array<number> }
}>()
const loraGolden = JSON.parse(readFileSync(join(__dirname, "fixtures/lora-tiny/golden.json"), "utf8")) as {
  forward: { loss: number }
  adamw: { lr: number; weight_decay: number; loss_trajectory: Array<number> }
}

const tokens = goldenTokens
const labels = goldenLabels
const batch = goldenCollated
const adamw = (weightDecay: number) => new AdamW({ beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay })

describe.each([
  { backend: "cpu" as const, label: "cpu" },
  { backend: "wasm" as const, label: "wasm with its fast paths off" }
])("the generic code paths, on $label", ({ backend }) => {
  let model: Qwen2
  let host: Map<string, Float32Array>
  let usesBefore: number

  beforeAll(async () => {
    process.env.PIPELINE_WASM_FAST_PATHS = "0"
    await initBackend({ backend, threads: 1 })
    model = (await runNode(loadHfFolder(FIXTURE))).model
    host = new Map([...model.params].map(([name, variable]) => [name, (variable.dataSync() as Float32Array).slice()]))
    usesBefore = fastPathUses()
  })

  afterAll(() => {
    expect(fastPathUses()).toBe(usesBefore)
    delete process.env.PIPELINE_WASM_FAST_PATHS
  })

  it("the model: transformers' logits, loss and gradient norm", () => {
    const logits = forwardLogits(model, tokens).arraySync()[0]!
    let worst = 0
    golden.forward.logits_seq0.forEach((row, t) => row.forEach((value, v) => (worst = Math.max(worst, Math.abs(value - logits[t]![v]!)))))
    expect(worst).toBeLessThan(1e-4)
    const { loss, grads } = lossAndGrads(model, tokens, labels)
    expect(Math.abs(loss - golden.forward.loss)).toBeLessThan(1e-5)
    const norm = Math.sqrt([...grads.values()].reduce((sum, g) => sum + Array.from(g.dataSync()).reduce((s, x) => s + x * x, 0), 0))
    expect(Math.abs(norm - golden.gradients.global_l2_norm) / golden.gradients.global_l2_norm).toBeLessThan(1e-4)
    grads.forEach((g) => g.dispose())
  })

  it("the trainer and the layer-wise loop: transformers' AdamW trajectory", () => {
    const tape = modelFromHost(model.config, host)
    const layerwise = new LayerwiseModel({ config: model.config, weights: new Map([...host].map(([n, v]) => [n, v.slice()])) })
    const [a, b] = [adamw(0.01), adamw(0.01)]
    const want = golden.adamw_same_batch_clip1.loss_trajectory
    for (let step = 0; step <= 10; step++) {
      const options = { normalizer: batch.labelTokens, lr: step < 10 ? 1e-3 : 0, maxGradNorm: 1, decay: () => true }
      expect(Math.abs(updateStep(tape, a!, [batch], options).loss - want[step]!), `tape, step ${step}`).toBeLessThan(1e-4)
      expect(Math.abs(layerwise.update(b!, [batch], options).loss - want[step]!), `layer-wise, step ${step}`).toBeLessThan(1e-4)
    }
  })

  it("LoRA, layer-wise: PyTorch's loss and AdamW trajectory on the adapter", async () => {
    const adapter = await runNode(readAdapterFolder(join(__dirname, "fixtures/lora-tiny/adapter"), model.config))
    const layerwise = new LayerwiseModel({ config: model.config, weights: new Map([...host].map(([n, v]) => [n, v.slice()])), adapter: { plan: adapter.plan, weights: adapter.weights } })
    expect(Math.abs(layerwise.evalLoss(batch) - loraGolden.forward.loss)).toBeLessThan(1e-5)
    const optimizer = adamw(loraGolden.adamw.weight_decay)
    loraGolden.adamw.loss_trajectory.forEach((want, step) => {
      const { loss } = layerwise.update(optimizer, [batch], { normalizer: batch.labelTokens, lr: step < 10 ? loraGolden.adamw.lr : 0, maxGradNorm: 1, decay: decays })
      expect(Math.abs(loss - want), `step ${step}`).toBeLessThan(1e-5)
    })
  })
})

describe("the fast-path counter", () => {
  it("counts the wasm fast paths when they are on (so that zero above means none was taken)", async () => {
    await initBackend({ backend: "wasm", threads: 1 })
    const before = fastPathUses()
    const model = (await Effect.runPromise(loadHfFolder(FIXTURE).pipe(Effect.provide(NodeContext.layer)))).model
    const layerwise = new LayerwiseModel({ config: model.config, weights: new Map([...model.params].map(([n, v]) => [n, (v.dataSync() as Float32Array).slice()])) })
    layerwise.accumulate(batch, batch.labelTokens)
    expect(fastPathUses()).toBeGreaterThan(before)
  })
})
