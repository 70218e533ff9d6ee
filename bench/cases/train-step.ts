/**
 * One benchmark case: training steps of a preset model as the train stage takes them
 * (collate → the layer-wise forward and backward → clip → AdamW), fully or with a LoRA
 * adapter, on this process's backend. The protocol is ../shared/anchor/bench_torch.py's
 * (and bench/lora_torch.py's): B×T random ids with the first 40% of each row labelled
 * -100, AdamW lr 1e-4 without decay, clipping at 1.0, warm-up steps, then the median of
 * the measured ones. Prints one JSON line, with the wasm heap's peak beside what the
 * memory check predicted for it.
 *
 *   node --import tsx bench/cases/train-step.ts --preset small --steps 5 [--mode lora --r 16 --alpha 32] [--batch 5 --seq 512]
 */
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Either } from "effect"
import { parseArgs } from "node:util"
import { estimateTraining } from "../../src/backend/memory.ts"
import { describeBackend, ensureBackend } from "../../src/backend/runtime.ts"
import { wasmHeapSize } from "../../src/backend/wasm-internals.ts"
import { ALL_LINEAR, DEFAULT_LORA, initLoraWeights, planLora } from "../../src/model/lora.ts"
import { AdamW } from "../../src/train/adamw.ts"
import { IGNORE_INDEX } from "../../src/constants.ts"
import { collate, type Example } from "../../src/train/collate.ts"
import { LayerwiseModel } from "../../src/train/layerwise.ts"
import { isPreset, PRESET_NAMES, presetConfig, randomHostWeights } from "../presets.ts"
import { CpuMeter, median, peakRssMb, splitMix } from "./measure.ts"

const { values: args } = parseArgs({
  options: {
    preset: { type: "string", default: "tiny" },
    layers: { type: "string" },
    batch: { type: "string", default: "4" },
    seq: { type: "string", default: "256" },
    steps: { type: "string", default: "5" },
    warmup: { type: "string", default: "2" },
    "prompt-frac": { type: "string", default: "0.4" },
    mode: { type: "string", default: "full" },
    r: { type: "string", default: "16" },
    alpha: { type: "string", default: "32" }
  }
})

const preset = args.preset ?? "tiny"
if (!isPreset(preset)) throw new Error(`--preset ${preset}: expected ${PRESET_NAMES.join(", ")}`)
if (args.mode !== "full" && args.mode !== "lora") throw new Error(`--mode ${args.mode}: expected full or lora`)
const [batchSize, seqLen, steps, warmup] = [args.batch, args.seq, args.steps, args.warmup].map(Number) as [number, number, number, number]
const promptFrac = Number(args["prompt-frac"])

const backend = await Effect.runPromise(ensureBackend)
const config = await presetConfig(preset, args.layers === undefined ? undefined : Number(args.layers))
const plan = args.mode === "lora"
  ? Either.getOrThrow(planLora(config, { ...DEFAULT_LORA, r: Number(args.r), lora_alpha: Number(args.alpha), target_modules: ALL_LINEAR }))
  : undefined
const heapBefore = wasmHeapSize(tf.backend()) ?? 0
const model = new LayerwiseModel({ config, weights: randomHostWeights(config, 0), ...(plan !== undefined && { adapter: { plan, weights: initLoraWeights(plan, 0) } }) })
const params = [...model.weights.values()].reduce((sum, values) => sum + values.length, 0)

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
const rows: Array<{ step: number; grad: number; opt: number; loss: number; forward: number; head: number; backward: number }> = []
let meter: CpuMeter | undefined
for (let step = 0; step < warmup + steps; step++) {
  if (step === warmup) meter = new CpuMeter()
  const batch = batches[step % batches.length]!
  const phases = { ...model.seconds }
  const started = performance.now()
  const result = model.update(optimizer, [batch], { normalizer: batch.labelTokens, lr: 1e-4, maxGradNorm: 1 })
  const seconds = (performance.now() - started) / 1000
  rows.push({
    step: seconds,
    grad: result.gradSeconds,
    opt: result.optimizerSeconds,
    loss: result.loss,
    forward: model.seconds.forward - phases.forward,
    head: model.seconds.head - phases.head,
    backward: model.seconds.backward - phases.backward
  })
}
const measured = rows.slice(warmup)
const step = median(measured.map((r) => r.step))
const estimate = estimateTraining(config, { adapter: plan, batchSize, seqLen })
const GIB = 2 ** 30
const round = (value: number, digits = 4) => Math.round(value * 10 ** digits) / 10 ** digits
console.log(JSON.stringify({
  impl: "tfjs",
  backend: backend.name,
  threads: backend.threads,
  backend_line: describeBackend(backend),
  preset,
  mode: args.mode,
  layers: config.num_hidden_layers,
  B: batchSize,
  T: seqLen,
  params,
  trainable: model.trainableCount,
  steps: measured.length,
  median_step_s: round(step),
  min_step_s: round(Math.min(...measured.map((r) => r.step))),
  max_step_s: round(Math.max(...measured.map((r) => r.step))),
  tokens_per_s: Math.round((batchSize * seqLen / step) * 10) / 10,
  median_fwd_bwd_s: round(median(measured.map((r) => r.grad))),
  median_opt_s: round(median(measured.map((r) => r.opt))),
  median_forward_s: round(median(measured.map((r) => r.forward))),
  median_head_s: round(median(measured.map((r) => r.head))),
  median_backward_s: round(median(measured.map((r) => r.backward))),
  peak_rss_mb: peakRssMb(),
  // The heap only grows: its size now is its peak, from this model's training (nothing else ran before).
  heap_before_gib: round(heapBefore / GIB, 3),
  peak_heap_gib: backend.name === "wasm" ? round((wasmHeapSize(tf.backend()) ?? 0) / GIB, 3) : null,
  predicted_heap_gib: round(estimate.backendPeakBytes / GIB, 3),
  predicted_rss_gib: round(estimate.totalBytes / GIB, 2),
  tensors: tf.memory().numTensors,
  last_loss: Math.round((measured.at(-1)?.loss ?? Number.NaN) * 1e4) / 1e4,
  others_cpu_frac: meter?.othersFraction() ?? 0
}))
