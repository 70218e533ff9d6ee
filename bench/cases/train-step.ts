/**
 * One benchmark case: training steps of a preset model, as the trainer takes them
 * (collate → forward + backward → clip → AdamW), on this process's backend.
 * The protocol is ../shared/anchor/bench_torch.py's: B=4, T=256 random ids with the
 * first 40% of each row labelled -100, AdamW lr 1e-4 without decay, clipping at 1.0,
 * 2 warm-up steps, then the median of the measured steps. Prints one JSON line.
 *
 *   node --import tsx bench/cases/train-step.ts --preset small --steps 5 [--backend wasm] [--threads 2]
 */
import * as tf from "@tensorflow/tfjs-core"
import { parseArgs } from "node:util"
import { Effect } from "effect"
import { describeBackend, ensureBackend } from "../../src/backend/runtime.ts"
import { initModel } from "../../src/model/qwen2.ts"
import { AdamW } from "../../src/train/adamw.ts"
import { collate, type Example, IGNORE_INDEX } from "../../src/train/collate.ts"
import { updateStep } from "../../src/train/trainer.ts"
import { isPreset, presetConfig } from "../presets.ts"
import { CpuMeter, median, peakRssMb, splitMix } from "./measure.ts"

const { values: args } = parseArgs({
  options: {
    preset: { type: "string", default: "tiny" },
    layers: { type: "string" },
    batch: { type: "string", default: "4" },
    seq: { type: "string", default: "256" },
    steps: { type: "string", default: "5" },
    warmup: { type: "string", default: "2" },
    "prompt-frac": { type: "string", default: "0.4" }
  }
})

const preset = args.preset ?? "tiny"
if (!isPreset(preset)) throw new Error(`--preset ${preset}: expected tiny, small or qwen2.5-0.5b-slice`)
const [batchSize, seqLen, steps, warmup] = [args.batch, args.seq, args.steps, args.warmup].map(Number) as [number, number, number, number]
const promptFrac = Number(args["prompt-frac"])

const backend = await Effect.runPromise(ensureBackend)
const config = await presetConfig(preset, args.layers === undefined ? undefined : Number(args.layers))
const model = initModel(config, 0)
const params = [...model.params.values()].reduce((sum, v) => sum + v.size, 0)

// Four fixed batches, cycled, as the anchor does.
const random = splitMix(0)
const batches = Array.from({ length: 4 }, () => {
  const examples: Array<Example> = Array.from({ length: batchSize }, () => {
    const inputIds = Int32Array.from({ length: seqLen }, () => Math.floor(random() * config.vocab_size))
    const labels = Int32Array.from(inputIds, (id, t) => (t < Math.floor(seqLen * promptFrac) ? IGNORE_INDEX : id))
    return { inputIds, labels }
  })
  return collate(examples, 0)
})

const optimizer = new AdamW({ beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 })
const rows: Array<{ step: number; grad: number; opt: number; loss: number }> = []
let meter: CpuMeter | undefined
for (let step = 0; step < warmup + steps; step++) {
  if (step === warmup) meter = new CpuMeter()
  const batch = batches[step % batches.length]!
  const started = performance.now()
  const result = updateStep(model, optimizer, [batch], { normalizer: batch.labelTokens, lr: 1e-4, maxGradNorm: 1 })
  const seconds = (performance.now() - started) / 1000
  rows.push({ step: seconds, grad: result.gradSeconds, opt: result.optimizerSeconds, loss: result.loss })
}
const measured = rows.slice(warmup)
const step = median(measured.map((r) => r.step))
console.log(JSON.stringify({
  impl: "tfjs",
  backend: backend.name,
  threads: backend.threads,
  backend_line: describeBackend(backend),
  preset,
  layers: config.num_hidden_layers,
  B: batchSize,
  T: seqLen,
  params,
  steps: measured.length,
  median_step_s: round(step),
  min_step_s: round(Math.min(...measured.map((r) => r.step))),
  max_step_s: round(Math.max(...measured.map((r) => r.step))),
  tokens_per_s: Math.round((batchSize * seqLen / step) * 10) / 10,
  median_fwd_bwd_s: round(median(measured.map((r) => r.grad))),
  median_opt_s: round(median(measured.map((r) => r.opt))),
  peak_rss_mb: peakRssMb(),
  tensors: tf.memory().numTensors,
  last_loss: Math.round((measured.at(-1)?.loss ?? Number.NaN) * 1e4) / 1e4,
  others_cpu_frac: meter?.othersFraction() ?? 0
}))

function round(value: number): number {
  return Math.round(value * 1e4) / 1e4
}
