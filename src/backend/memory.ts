/**
 * Will a model fit? Checked from its config alone, before any weight is loaded.
 *
 * On wasm every tensor lives in a 32-bit heap (at most 4,294,901,760 bytes), and an
 * allocation past that fails (see `guardHeap`). Elsewhere tensors are ordinary memory.
 *
 * - **Inference** (evaluate, generate) holds the whole model on the backend: the float32
 *   weights, and on wasm XNNPACK's packed copy of every matmul weight.
 * - **Training** is layer-wise (src/train/layerwise.ts): weights, gradients and AdamW's
 *   moments live in JS memory, with every layer's recorded activations between the two
 *   passes. The backend holds the head (the final norm and the head weight, its packed
 *   copy, the logits of one pass through it and, fully fine-tuning, its gradient) and one
 *   layer at a time (its weights, their packed and transposed copies, its activations and
 *   their gradients). The peak is the head's phase or a layer's, whichever is larger.
 *
 * The activation terms are fitted to the wasm heap measured by `npm run bench`
 * (bench/NOTES.md): the prediction is meant to be within 15% of the heap's peak.
 */
import { Data, Effect } from "effect"
import { totalmem } from "node:os"
import type { Qwen2Config } from "../model/config.ts"
import type { LoraPlan } from "../model/lora.ts"
import { parameterSpecs } from "../model/params.ts"
import { BACKEND_NAMES, type BackendName } from "./select.ts"
import { WASM_HEAP_MAX_BYTES } from "./wasm-internals.ts"

const FLOAT_BYTES = 4
const GIB = 1024 ** 3
const gib = (bytes: number) => `${(bytes / GIB).toFixed(2)} GiB`
const count = (shape: ReadonlyArray<number>) => shape.reduce((a, b) => a * b, 1)

/** Node, TensorFlow.js and the libraries, before any model: measured, rounded up. */
const PROCESS_BASELINE_BYTES = 0.35 * GIB
/** The head runs at most this many logits at once (loss.ts's HEAD_CHUNK_ELEMENTS). */
const HEAD_PASS_LOGITS = 64 * 2 ** 20

// ---------------------------------------------------------------------------------------
// Inference

export interface InferenceEstimate {
  readonly parameters: number
  readonly weightBytes: number
  /** XNNPACK's packed copy of every matmul weight (wasm only). */
  readonly packedBytes: number
  /** What the wasm heap must hold. */
  readonly wasmHeapBytes: number
  /** Everything, on a backend without packing or a heap cap. */
  readonly totalBytes: number
}

export const estimateInference = (config: Qwen2Config): InferenceEstimate => {
  const specs = parameterSpecs(config)
  const parameters = specs.reduce((n, spec) => n + count(spec.shape), 0)
  const matmulWeights = specs.filter((spec) => spec.transposed).reduce((n, spec) => n + count(spec.shape), 0)
  const weightBytes = parameters * FLOAT_BYTES
  const packedBytes = matmulWeights * FLOAT_BYTES
  return { parameters, weightBytes, packedBytes, wasmHeapBytes: weightBytes + packedBytes, totalBytes: weightBytes }
}

// ---------------------------------------------------------------------------------------
// Layer-wise training

export interface TrainingRequest {
  /** LoRA: the adapter (only it trains); absent: every weight trains. */
  readonly adapter?: LoraPlan | undefined
  /** The largest micro-batch: rows, and the longest row's tokens. */
  readonly batchSize: number
  readonly seqLen: number
  /** Host memory to plan against; defaults to 90% of this machine's. */
  readonly hostBytes?: number
}

export interface TrainingEstimate {
  readonly parameters: number
  readonly trainable: number
  /** JS memory: master weights, gradients and moments, recorded activations. */
  readonly weightBytes: number
  readonly gradientBytes: number
  readonly optimizerBytes: number
  readonly activationBytes: number
  /** The backend's share (the wasm heap, on wasm): what stays, the head's phase, one layer's phase. */
  readonly residentBytes: number
  readonly headPhaseBytes: number
  readonly layerPhaseBytes: number
  /** resident + the larger phase: the peak of the wasm heap. */
  readonly backendPeakBytes: number
  /** The process's peak: JS memory, the backend's peak, and the process itself. */
  readonly totalBytes: number
}

/**
 * A layer's pass holds its weights with their packed and transposed copies (3×), what the
 * forward pass records with its transients and gradients (2.9× the recorded floats), and
 * attention maps with their gradients (4.4× one [B, nH, T, T] map). The head's pass holds
 * one pass's logits and their transposed copy. The heap's peak is the larger phase, 9%
 * over its live tensors (the allocator grows in steps), plus a fifth of the smaller one:
 * the blocks of one phase only partly fit the holes the other leaves. Fitted to the heap
 * measured at hidden 896 and 256, batches 4×256 to 8×512, fully and with LoRA, weights
 * read into JS memory as the train stage reads them: within −9% and +12% of every one
 * (bench/NOTES.md).
 */
const LAYER_WEIGHT_COPIES = 3
const LAYER_ACTIVATION_FACTOR = 2.9
const ATTENTION_MAP_FACTOR = 4.4
const LARGER_PHASE = 1.09
const SMALLER_PHASE = 0.2

/** Floats per token that one layer's forward pass records for the backward pass (see backward.ts). */
const recordedPerToken = (config: Qwen2Config, adapterRanks: number): number => {
  const { hidden_size: h, intermediate_size: ffn, head_dim: hd, num_attention_heads: nH, num_key_value_heads: nKV } = config
  return 2 * h + 2 * nH * hd + 2 * nKV * hd + 2 * ffn + 2 + adapterRanks
}

export const estimateTraining = (config: Qwen2Config, request: TrainingRequest): TrainingEstimate => {
  const specs = parameterSpecs(config)
  const parameters = specs.reduce((n, spec) => n + count(spec.shape), 0)
  const adapterParameters = request.adapter?.specs.reduce((n, spec) => n + count(spec.shape), 0) ?? 0
  const trainable = request.adapter === undefined ? parameters : adapterParameters
  const layers = config.num_hidden_layers
  const { hidden_size: h, vocab_size: vocab, num_attention_heads: nH } = config
  const layerParameters = specs.filter((spec) => spec.name.startsWith("model.layers.0.")).reduce((n, spec) => n + count(spec.shape), 0)
  const ranksPerLayer = (request.adapter?.modules ?? []).filter((m) => m.module.startsWith("model.layers.0.")).reduce((n, m) => n + m.r, 0)
  const adapterPerLayer = adapterParameters / layers
  const tokens = request.batchSize * request.seqLen
  const attentionMap = request.batchSize * nH * request.seqLen * request.seqLen

  const recorded = layers * (tokens * recordedPerToken(config, ranksPerLayer) + attentionMap)
  // The head's weight and XNNPACK's packed copy of it (the right operand of dh), kept.
  const resident = h + 2 * vocab * h
  // One pass's logits and their transposed copy (the head's gradient comes in slices that fit where the copy was).
  const passRows = Math.min(tokens, Math.max(1, Math.floor(HEAD_PASS_LOGITS / vocab)))
  const headPhase = 2 * passRows * vocab
  const layerPhase = LAYER_WEIGHT_COPIES * (layerParameters + adapterPerLayer) +
    LAYER_ACTIVATION_FACTOR * tokens * recordedPerToken(config, ranksPerLayer) + ATTENTION_MAP_FACTOR * attentionMap
  const backendPeak = resident + LARGER_PHASE * Math.max(headPhase, layerPhase) + SMALLER_PHASE * Math.min(headPhase, layerPhase)
  const weightBytes = (parameters + adapterParameters) * FLOAT_BYTES
  const gradientBytes = trainable * FLOAT_BYTES
  const optimizerBytes = 2 * trainable * FLOAT_BYTES
  const activationBytes = recorded * FLOAT_BYTES
  return {
    parameters,
    trainable,
    weightBytes,
    gradientBytes,
    optimizerBytes,
    activationBytes,
    residentBytes: resident * FLOAT_BYTES,
    headPhaseBytes: headPhase * FLOAT_BYTES,
    layerPhaseBytes: layerPhase * FLOAT_BYTES,
    backendPeakBytes: backendPeak * FLOAT_BYTES,
    totalBytes: weightBytes + gradientBytes + optimizerBytes + activationBytes + backendPeak * FLOAT_BYTES + PROCESS_BASELINE_BYTES
  }
}

// ---------------------------------------------------------------------------------------
// The checks

/** The model does not fit on the chosen backend. */
export class ModelTooLarge extends Data.TaggedError("ModelTooLarge")<{
  readonly backend: BackendName
  readonly message: string
  /** Backends it would fit on. */
  readonly fits: ReadonlyArray<BackendName>
}> {}

const heapLimit = `the wasm heap is capped at ${WASM_HEAP_MAX_BYTES.toLocaleString("en-US")} bytes (${gib(WASM_HEAP_MAX_BYTES)})`

const refuse = (backend: BackendName, need: string, fits: ReadonlyArray<BackendName>, otherwise: string) =>
  new ModelTooLarge({
    backend,
    fits,
    message: `${need}${fits.length > 0 ? ` It would fit on: ${fits.join(", ")}${fits.includes("tensorflow") ? " (tensorflow needs @tensorflow/tfjs-node)" : ""}.` : ` ${otherwise}`}`
  })

/** Whether a model can run (evaluate, generate) on `backend`; fails with the figures and where it would fit. */
export const checkMemoryFit = (config: Qwen2Config, backend: BackendName, request: { readonly hostBytes?: number } = {}): Effect.Effect<InferenceEstimate, ModelTooLarge> => {
  const estimate = estimateInference(config)
  const hostBytes = request.hostBytes ?? 0.9 * totalmem()
  const fitsOn = (name: BackendName) =>
    name === "wasm"
      ? estimate.wasmHeapBytes <= WASM_HEAP_MAX_BYTES && estimate.wasmHeapBytes + PROCESS_BASELINE_BYTES <= hostBytes
      : estimate.totalBytes + PROCESS_BASELINE_BYTES <= hostBytes
  if (fitsOn(backend)) return Effect.succeed(estimate)
  const millions = (estimate.parameters / 1e6).toFixed(1)
  const need = backend === "wasm" ? estimate.wasmHeapBytes : estimate.totalBytes
  const parts = `weights ${gib(estimate.weightBytes)}${backend === "wasm" ? ` + packed matmul weights ${gib(estimate.packedBytes)}` : ""}`
  const limit = backend === "wasm" && estimate.wasmHeapBytes > WASM_HEAP_MAX_BYTES ? heapLimit : `this machine has ${gib(hostBytes)} to plan with`
  const message = `${config.architecture} with ${millions}M parameters needs about ${gib(need)} ${backend === "wasm" ? "on the wasm heap" : "of memory"} to run (${parts}), but ${limit}.`
  return Effect.fail(refuse(backend, message, BACKEND_NAMES.filter((name) => name !== backend && fitsOn(name)), "It fits on no backend here: use a smaller model."))
}

/** Whether training fits on `backend` at this batch; fails with the figures, what to change, and where it would fit. */
export const checkTrainingFit = (config: Qwen2Config, backend: BackendName, request: TrainingRequest): Effect.Effect<TrainingEstimate, ModelTooLarge> => {
  const estimate = estimateTraining(config, request)
  const hostBytes = request.hostBytes ?? 0.9 * totalmem()
  const fitsOn = (name: BackendName) => estimate.totalBytes <= hostBytes && (name !== "wasm" || estimate.backendPeakBytes <= WASM_HEAP_MAX_BYTES)
  if (fitsOn(backend)) return Effect.succeed(estimate)
  const what = request.adapter === undefined ? "every weight" : `a LoRA adapter (${(estimate.trainable / 1e6).toFixed(1)}M parameters)`
  const heap = `${gib(estimate.backendPeakBytes)} on the ${backend === "wasm" ? "wasm heap" : "backend"} at its peak (${estimate.headPhaseBytes >= estimate.layerPhaseBytes ? "the head's pass" : "one layer's pass"})`
  const memory = `${gib(estimate.totalBytes)} of memory in all (weights ${gib(estimate.weightBytes)}, gradients ${gib(estimate.gradientBytes)}, AdamW moments ${gib(estimate.optimizerBytes)}, activations kept for the backward pass ${gib(estimate.activationBytes)})`
  const limit = backend === "wasm" && estimate.backendPeakBytes > WASM_HEAP_MAX_BYTES ? heapLimit : `this machine has ${gib(hostBytes)} to plan with`
  const message = `Training ${what} of ${config.architecture} (${(estimate.parameters / 1e6).toFixed(1)}M parameters) on batches of ${request.batchSize} × ${request.seqLen} tokens needs about ${heap} and ${memory}, but ${limit}.`
  // LoRA helps when the optimizer's state is what overflows, not the activations.
  const loraHelps = request.adapter === undefined && estimate.gradientBytes + estimate.optimizerBytes > estimate.activationBytes
  const advice = `Lower batch_size (raising gradient_accumulation_steps keeps the effective batch), shorten the rows${loraHelps ? ", or train a LoRA adapter (lora:)" : ""}.`
  return Effect.fail(refuse(backend, message, BACKEND_NAMES.filter((name) => name !== backend && fitsOn(name)), advice))
}
