/**
 * Will a model fit? Checked from its config alone, before any weight is loaded.
 *
 * On wasm every tensor lives in a 32-bit heap (at most 4,294,901,760 bytes), and an
 * allocation past that fails (see `guardHeap`). What the heap must hold: the float32
 * weights; their gradients when training; XNNPACK's packed copy of every matmul weight,
 * and in the backward pass one more copy of the head's weight (packed when tied, where
 * the forward pass packs nothing of it; transposed and packed when not); the activations
 * kept for the backward pass. The AdamW moments are expected off the heap (JS arrays),
 * as a fused optimizer keeps them; say so if they are not.
 * The activation figure is a rough upper estimate, not a measurement.
 */
import { Data, Effect } from "effect"
import { totalmem } from "node:os"
import type { Qwen2Config } from "../model/config.ts"
import { parameterSpecs } from "../model/params.ts"
import { BACKEND_NAMES, type BackendName } from "./select.ts"
import { WASM_HEAP_MAX_BYTES } from "./wasm-internals.ts"

const FLOAT_BYTES = 4

export interface MemoryRequest {
  readonly training: boolean
  /** AdamW's two moments on the wasm heap rather than in JS arrays. */
  readonly optimizerOnHeap?: boolean
  /** Tokens per step (batch × sequence length) and the sequence length, for activations. */
  readonly tokensPerStep?: number
  readonly seqLen?: number
  /** Host memory to plan against; defaults to 90% of this machine's. */
  readonly hostBytes?: number
}

export interface MemoryEstimate {
  readonly parameters: number
  readonly weightBytes: number
  readonly gradientBytes: number
  readonly optimizerBytes: number
  /** XNNPACK's packed weights and the backward pass's copies of the head (wasm only). */
  readonly packedBytes: number
  readonly activationBytes: number
  /** What must fit in the wasm heap. */
  readonly wasmHeapBytes: number
  /** Everything, on a backend without packing and without a heap cap. */
  readonly totalBytes: number
}

export const estimateMemory = (config: Qwen2Config, request: MemoryRequest): MemoryEstimate => {
  const specs = parameterSpecs(config)
  const parameters = specs.reduce((n, spec) => n + spec.shape.reduce((a, b) => a * b, 1), 0)
  const matmulWeights = specs
    .filter((spec) => spec.transposed)
    .reduce((n, spec) => n + spec.shape.reduce((a, b) => a * b, 1), 0)
  const head = config.vocab_size * config.hidden_size
  const headCopies = request.training ? (config.tie_word_embeddings ? head : 2 * head) : 0
  const weightBytes = parameters * FLOAT_BYTES
  const gradientBytes = request.training ? weightBytes : 0
  const optimizerBytes = request.training ? 2 * weightBytes : 0
  const activationBytes = activations(config, request) * FLOAT_BYTES
  const packedBytes = (matmulWeights + headCopies) * FLOAT_BYTES
  const onHeapOptimizer = request.optimizerOnHeap === true ? optimizerBytes : 0
  return {
    parameters,
    weightBytes,
    gradientBytes,
    optimizerBytes,
    packedBytes,
    activationBytes,
    wasmHeapBytes: weightBytes + gradientBytes + packedBytes + activationBytes + onHeapOptimizer,
    totalBytes: weightBytes + gradientBytes + optimizerBytes + activationBytes
  }
}

/** Floats kept per step: per token and layer the block's intermediates, plus the attention maps and the head. */
const activations = (config: Qwen2Config, request: MemoryRequest): number => {
  const tokens = request.tokensPerStep ?? 0
  if (tokens === 0) return 0
  const { hidden_size: h, intermediate_size: ffn, head_dim: hd, num_attention_heads: nH, num_key_value_heads: nKV } = config
  const seq = request.seqLen ?? tokens
  const perTokenLayer = 8 * h + 4 * (nH + 2 * nKV) * hd + 5 * ffn + 3 * nH * seq
  const kept = request.training ? config.num_hidden_layers : 1
  // The head: the logits (rewritten in place into their gradient) and, backward, its transpose.
  return tokens * (perTokenLayer * kept + (request.training ? 2 : 1) * config.vocab_size)
}

const GIB = 1024 ** 3
const gib = (bytes: number) => `${(bytes / GIB).toFixed(2)} GiB`

/** The model does not fit on the chosen backend. */
export class ModelTooLarge extends Data.TaggedError("ModelTooLarge")<{
  readonly backend: BackendName
  readonly message: string
  readonly estimate: MemoryEstimate
  /** Backends it would fit on. */
  readonly fits: ReadonlyArray<BackendName>
}> {}

const fitsOn = (backend: BackendName, estimate: MemoryEstimate, hostBytes: number): boolean =>
  backend === "wasm"
    ? estimate.wasmHeapBytes <= WASM_HEAP_MAX_BYTES && estimate.totalBytes + estimate.packedBytes <= hostBytes
    : estimate.totalBytes <= hostBytes

const describe = (config: Qwen2Config, backend: BackendName, request: MemoryRequest, e: MemoryEstimate, hostBytes: number) => {
  const what = request.training ? "to train" : "to run"
  const parts = [
    `weights ${gib(e.weightBytes)}`,
    ...(e.gradientBytes > 0 ? [`gradients ${gib(e.gradientBytes)}`] : []),
    ...(backend === "wasm" ? [`packed matmul weights ${gib(e.packedBytes)}`] : []),
    ...(e.activationBytes > 0 ? [`activations ${gib(e.activationBytes)}`] : []),
    ...(e.optimizerBytes > 0 && (backend !== "wasm" || request.optimizerOnHeap === true) ? [`AdamW moments ${gib(e.optimizerBytes)}`] : [])
  ]
  const need = backend === "wasm" ? e.wasmHeapBytes : e.totalBytes
  const limit =
    backend === "wasm" && e.wasmHeapBytes > WASM_HEAP_MAX_BYTES
      ? `the wasm heap is capped at ${WASM_HEAP_MAX_BYTES.toLocaleString("en-US")} bytes (${gib(WASM_HEAP_MAX_BYTES)})`
      : `this machine has ${gib(hostBytes)} to plan with`
  const millions = (e.parameters / 1e6).toFixed(1)
  const where = backend === "wasm" ? "on the wasm heap" : "of memory"
  return `${config.architecture} with ${millions}M parameters needs about ${gib(need)} ${where} ${what} (${parts.join(" + ")}), but ${limit}.`
}

/** Succeeds with the estimate, or refuses with the figures and the backends that would fit. */
export const checkMemoryFit = (
  config: Qwen2Config,
  backend: BackendName,
  request: MemoryRequest
): Effect.Effect<MemoryEstimate, ModelTooLarge> => {
  const estimate = estimateMemory(config, request)
  const hostBytes = request.hostBytes ?? 0.9 * totalmem()
  if (fitsOn(backend, estimate, hostBytes)) return Effect.succeed(estimate)
  const fits = BACKEND_NAMES.filter((other) => other !== backend && fitsOn(other, estimate, hostBytes))
  const advice =
    fits.length > 0
      ? ` It would fit on: ${fits.join(", ")}${fits.includes("tensorflow") ? " (tensorflow needs @tensorflow/tfjs-node)" : ""}.`
      : " It fits on no backend here: train fewer parameters (LoRA, a frozen embedding) or shorten the batch."
  const message = describe(config, backend, request, estimate, hostBytes) + advice
  return Effect.fail(new ModelTooLarge({ backend, message, estimate, fits }))
}
