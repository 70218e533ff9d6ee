/**
 * DPO against PyTorch (tests/fixtures/dpo-tiny/make.py: TRL 0.12's formulas on the
 * qwen2-tiny fixture): the reference's log-probabilities, and three AdamW updates of two
 * micro-batches each, for every loss type (sigmoid with and without label smoothing,
 * IPO, hinge), fully and with LoRA (whose reference is the base with the adapter
 * off): losses, TRL's metrics, the gradient norm, and on the first update every
 * parameter's gradient norm. On wasm and cpu.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { type BackendName, initBackend } from "../src/backend/select.ts"
import { type DpoLossType, type DpoSettings, METRIC_NAMES } from "../src/dpo/objective.ts"
import { collatePairs, type PairExample } from "../src/dpo/pairs.ts"
import { accumulatePairs, dpoUpdate, type PairBatch, pairLogps } from "../src/dpo/update.ts"
import { readAdapterFolder } from "../src/model/adapter-folder.ts"
import { loadHfFolder } from "../src/model/hf-folder.ts"
import { disposeModel } from "../src/model/qwen2.ts"
import type { Qwen2Config } from "../src/model/config.ts"
import { AdamW } from "../src/train/adamw.ts"
import { LayerwiseModel } from "../src/train/layerwise.ts"
import { runNode } from "./helpers.ts"
import { QWEN2_TINY } from "./support/golden.ts"

interface Step {
  loss: number
  grad_norm: number
  per_parameter_grad_l2_norm?: Record<string, number>
  micro_batches: Array<{ loss: number; metrics: Record<string, number>; chosen_logps: Array<number>; rejected_logps: Array<number> }>
}
interface Run {
  case: { loss_type: DpoLossType; label_smoothing: number }
  reference: Array<{ chosen: Array<number>; rejected: Array<number> }>
  steps: Array<Step>
}
const golden = JSON.parse(readFileSync(join(__dirname, "fixtures/dpo-tiny/golden.json"), "utf8")) as {
  beta: number
  pad: number
  pairs: Array<{ prompt: Array<number>; chosen: Array<number>; rejected: Array<number> }>
  micro_batches: Array<Array<number>>
  adamw: { lr: number; betas: [number, number]; eps: number; weight_decay: number; max_grad_norm: number }
  full: Array<Run>
  lora: Array<Run>
}

const pairs: Array<PairExample> = golden.pairs.map((p) => ({ prompt: Int32Array.from(p.prompt), chosen: Int32Array.from(p.chosen), rejected: Int32Array.from(p.rejected) }))

/** Relative difference, against a floor for values near zero. */
const close = (actual: number, expected: number, tolerance = 2e-5, floor = 1e-3) =>
  expect(Math.abs(actual - expected) / Math.max(floor, Math.abs(expected)), `${actual} vs ${expected}`).toBeLessThan(tolerance)

describe.each<BackendName>(["wasm", "cpu"])("DPO on %s, against PyTorch", (backend) => {
  let config: Qwen2Config
  let base: Map<string, Float32Array>
  let adapter: Awaited<ReturnType<typeof loadAdapter>>
  const loadAdapter = (cfg: Qwen2Config) => runNode(readAdapterFolder(join(__dirname, "fixtures/lora-tiny/adapter"), cfg))

  beforeAll(async () => {
    await initBackend({ backend, threads: 1 })
    const { model } = await Effect.runPromise(loadHfFolder(QWEN2_TINY).pipe(Effect.provide(NodeContext.layer)))
    config = model.config
    base = new Map([...model.params].map(([name, variable]) => [name, (variable.dataSync() as Float32Array).slice()]))
    disposeModel(model)
    adapter = await loadAdapter(config)
  })

  const modelFor = (kind: "full" | "lora") =>
    new LayerwiseModel({
      config,
      weights: new Map([...base].map(([name, values]) => [name, values.slice()])),
      ...(kind === "lora" && { adapter: { plan: adapter.plan, weights: new Map([...adapter.weights].map(([name, values]) => [name, values.slice()])) } })
    })

  for (const kind of ["full", "lora"] as const) {
    it.each(golden[kind].map((run) => ({ run, label: `${run.case.loss_type}${run.case.label_smoothing > 0 ? `, label smoothing ${run.case.label_smoothing}` : ""}` })))(
      `${kind}: $label`,
      ({ run }) => {
        const settings: DpoSettings = { beta: golden.beta, lossType: run.case.loss_type, labelSmoothing: run.case.label_smoothing }
        const model = modelFor(kind)
        try {
          const batches = golden.micro_batches.map((ids) => collatePairs(ids.map((i) => pairs[i]!), golden.pad, undefined))
          // The reference: the starting model itself (full), or the base with the adapter off (LoRA).
          const reference = batches.map((batch, i) => pairLogps(model, settings, batch, golden.micro_batches[i]!.length, { adapterOff: kind === "lora" }))
          reference.forEach((mb, i) =>
            mb.forEach((pair, j) => {
              close(pair.chosen, run.reference[i]!.chosen[j]!)
              close(pair.rejected, run.reference[i]!.rejected[j]!)
            }))
          const micros: Array<PairBatch> = batches.map((batch, i) => ({ batch, pairs: golden.micro_batches[i]!.length, reference: reference[i]! }))
          const optimizer = new AdamW({ beta1: golden.adamw.betas[0], beta2: golden.adamw.betas[1], eps: golden.adamw.eps, weightDecay: golden.adamw.weight_decay })
          run.steps.forEach((want) => {
            if (want.per_parameter_grad_l2_norm !== undefined) {
              // The first update's gradients, parameter by parameter (then dropped: the update below makes them again).
              micros.forEach((micro) => accumulatePairs(model, settings, micro, micros.length))
              const norms = new Map([...model.grads].map(([name, grad]) => [name, Math.sqrt(grad.reduce((sum, g) => sum + g * g, 0))]))
              model.discardGradients()
              expect([...norms.keys()].sort()).toEqual(Object.keys(want.per_parameter_grad_l2_norm).sort())
              for (const [name, expected] of Object.entries(want.per_parameter_grad_l2_norm)) close(norms.get(name)!, expected, 5e-5, 1e-4)
            }
            const result = dpoUpdate(model, optimizer, settings, micros, { lr: golden.adamw.lr, maxGradNorm: golden.adamw.max_grad_norm, decay: () => false })
            close(result.loss, want.loss)
            close(result.norm, want.grad_norm)
            result.microBatches.forEach((terms, i) => {
              const expected = want.micro_batches[i]!
              close(terms.loss, expected.loss)
              // Rewards are β times a difference of two sums of about -30: float32's rounding of the sums, not of the difference, sets their error.
              for (const name of METRIC_NAMES) close(terms.metrics[name], expected.metrics[name]!, 2e-5, 0.1)
            })
          })
        } finally {
          model.dispose()
        }
      }
    )
  }
})
