/**
 * One benchmark case: eval_loss's forward pass (what `evaluate` runs for each batch, no
 * gradients) on a preset model with random weights, over B×T random ids whose first 40%
 * are labelled -100, as bench/infer_torch.py --mode eval-loss does. Prints one JSON line.
 *
 *   node --import tsx bench/cases/eval-loss.ts --preset qwen2.5-0.5b --batch 5 --seq 512
 */
import { Effect } from "effect"
import { parseArgs } from "node:util"
import { ensureBackend } from "../../src/backend/runtime.ts"
import { wasmHeapSize } from "../../src/backend/wasm-internals.ts"
import { IGNORE_INDEX } from "../../src/constants.ts"
import { modelFromHost } from "../../src/model/qwen2.ts"
import { collate } from "../../src/train/collate.ts"
import { scoreWith } from "../../src/train/evaluation.ts"
import { isPreset, presetConfig, randomHostWeights } from "../presets.ts"
import { CpuMeter, median, peakRssMb, splitMix } from "./measure.ts"
import * as tf from "@tensorflow/tfjs-core"

const { values: args } = parseArgs({
  options: {
    preset: { type: "string", default: "tiny" },
    batch: { type: "string", default: "5" },
    seq: { type: "string", default: "512" },
    repeats: { type: "string", default: "3" }
  }
})
const preset = args.preset ?? "tiny"
if (!isPreset(preset)) throw new Error(`--preset ${preset}: expected tiny, small, qwen2.5-0.5b-slice or qwen2.5-0.5b`)
const [batchSize, seqLen, repeats] = [args.batch, args.seq, args.repeats].map(Number) as [number, number, number]

const backend = await Effect.runPromise(ensureBackend)
const config = await presetConfig(preset)
const model = modelFromHost(config, randomHostWeights(config, 0))
const random = splitMix(0)
const prompt = Math.floor(seqLen * 0.4)
const batch = collate(Array.from({ length: batchSize }, () => {
  const inputIds = Int32Array.from({ length: seqLen }, () => Math.floor(random() * config.vocab_size))
  return { inputIds, labels: Int32Array.from(inputIds, (id, t) => (t < prompt ? IGNORE_INDEX : id)) }
}), 0)
const score = scoreWith(model)

score(batch) // warm-up: kernels, XNNPACK packing
const meter = new CpuMeter()
const seconds: Array<number> = []
let loss = Number.NaN
for (let i = 0; i < repeats; i++) {
  const started = performance.now()
  loss = score(batch)
  seconds.push((performance.now() - started) / 1000)
}
const step = median(seconds)
const heap = backend.name === "wasm" ? wasmHeapSize(tf.backend()) : undefined
console.log(JSON.stringify({
  impl: "tfjs",
  backend: backend.name,
  threads: backend.threads,
  preset,
  B: batchSize,
  T: seqLen,
  median_s: Math.round(step * 1e4) / 1e4,
  min_s: Math.round(Math.min(...seconds) * 1e4) / 1e4,
  tokens_per_s: Math.round((batchSize * seqLen / step) * 100) / 100,
  loss: Math.round(loss * 1e4) / 1e4,
  ...(heap !== undefined && { heap_gib: Math.round(heap / 2 ** 30 * 100) / 100 }),
  peak_rss_mb: peakRssMb(),
  others_cpu_frac: meter.othersFraction()
}))
