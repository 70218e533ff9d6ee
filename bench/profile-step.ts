/**
 * Where a training step's time goes, kernel by kernel: tfjs's profiler over one
 * forward + backward of a preset, summed by kernel name, largest first.
 *
 *   node --import tsx bench/profile-step.ts --preset small [--top 25]
 */
import * as tf from "@tensorflow/tfjs-core"
import { parseArgs } from "node:util"
import { Effect } from "effect"
import { describeBackend, ensureBackend } from "../src/backend/runtime.ts"
import { lossAndGrads } from "../src/model/loss.ts"
import { initModel } from "../src/model/qwen2.ts"
import { IGNORE_INDEX } from "../src/constants.ts"
import { collate } from "../src/train/collate.ts"
import { toBatch } from "../src/train/trainer.ts"
import { splitMix } from "./cases/measure.ts"
import { isPreset, presetConfig } from "./presets.ts"

const { values: args } = parseArgs({ options: { preset: { type: "string", default: "small" }, top: { type: "string", default: "25" } } })
const preset = args.preset ?? "small"
if (!isPreset(preset)) throw new Error(`unknown preset ${preset}`)
const info = await Effect.runPromise(ensureBackend)
const config = await presetConfig(preset)
const model = initModel(config, 0)
const random = splitMix(0)
const batch = collate(Array.from({ length: 4 }, () => {
  const inputIds = Int32Array.from({ length: 256 }, () => Math.floor(random() * config.vocab_size))
  return { inputIds, labels: Int32Array.from(inputIds, (id, t) => (t < 102 ? IGNORE_INDEX : id)) }
}), 0)
const { tokens, labels } = toBatch(batch)
const run = () => lossAndGrads(model, tokens, labels).grads.forEach((g) => g.dispose())
run() // warm-up
const started = performance.now()
const profile = await tf.profile(run)
const wall = performance.now() - started
const byKernel = new Map<string, { ms: number; calls: number }>()
for (const kernel of profile.kernels) {
  const ms = typeof kernel.kernelTimeMs === "number" ? kernel.kernelTimeMs : 0
  const key = `${kernel.name} ${JSON.stringify(kernel.inputShapes)}`
  const entry = byKernel.get(key) ?? { ms: 0, calls: 0 }
  byKernel.set(key, { ms: entry.ms + ms, calls: entry.calls + 1 })
}
const total = [...byKernel.values()].reduce((a, b) => a + b.ms, 0)
console.log(`${describeBackend(info)}; preset ${preset}; wall ${wall.toFixed(0)} ms; kernels ${total.toFixed(0)} ms; peak bytes ${profile.peakBytes}`)
for (const [key, { ms, calls }] of [...byKernel].sort((a, b) => b[1].ms - a[1].ms).slice(0, Number(args.top))) {
  console.log(`${ms.toFixed(1).padStart(9)} ms ${String(calls).padStart(4)}×  ${key}`)
}
