/**
 * The layer-wise training loop: how a model far larger than the 4 GiB wasm heap trains
 * there, fully or with LoRA, on every backend alike.
 *
 * Master weights, gradients and the AdamW moments live in JS memory (Float32Arrays,
 * model layout). The heap holds only what one step of the pass needs:
 *
 * - forward: one layer's weights at a time, uploaded, run, released; what its backward
 *   pass needs (see src/model/backward.ts) is copied out to JS memory;
 * - the head: the final norm and the head weight (kept on the heap between
 *   micro-batches, and across steps while frozen), through `headLossAndGrads`;
 * - backward: layer by layer from the last, its weights and recorded activations
 *   uploaded again, its gradients added into the JS accumulators.
 *
 * Nothing is recomputed: the activations wait in JS memory instead (about 54 kB a token
 * a layer at Qwen2.5-0.5B's width, plus the attention maps), where HF's gradient
 * checkpointing would run every layer's matmuls twice. The embedding lookup, NEFTune's
 * noise and the embedding's row gradients are JS loops over the host table.
 *
 * The numbers are the tape's (`lossAndGrads` on a whole `Qwen2`): tests/layerwise.test.ts
 * holds losses, gradients and weights after AdamW steps to 1e-6 of it.
 */
import * as tf from "@tensorflow/tfjs-core"
import { readView } from "../backend/in-place.ts"
import { wasmHeapSize } from "../backend/wasm-internals.ts"
import { decoderLayerBackward } from "../model/backward.ts"
import type { Qwen2Config } from "../model/config.ts"
import { EMBEDDING, FINAL_NORM, headLossAndGrads, type LossOptions, lossFromLastHidden, type ScoredPositions, tokenLossesFromHidden } from "../model/loss.ts"
import type { LoraPlan } from "../model/lora.ts"
import { parameterSpecs, type TensorSpec } from "../model/params.ts"
import { attentionBlock, decoderLayer, mlpBlock, type ParamSource, prepareStep, type Step, type TokenBatch } from "../model/qwen2.ts"
import { type AdamW, clipCoefficient, decays, squaredNorm } from "./adamw.ts"
import type { Batch } from "./collate.ts"
import { dropoutMask, neftuneNoise, type NoiseKey } from "./noise.ts"

/** A model to train layer by layer: its config and weights in JS memory, and an adapter if LoRA. */
export interface LayerwiseInit {
  readonly config: Qwen2Config
  /** The base weights, by Hugging Face name in model layout. Updated in place when they train. */
  readonly weights: Map<string, Float32Array>
  /** LoRA: the adapter's plan and weights (updated in place); the base is then frozen. */
  readonly adapter?: { readonly plan: LoraPlan; readonly weights: Map<string, Float32Array> }
}

/** The randomness of a training micro-batch (see noise.ts); evaluation passes none. */
export interface TrainingNoise {
  readonly key: NoiseKey
  /** NEFTune's alpha; 0 or absent: no noise. */
  readonly neftuneAlpha?: number
}

export interface UpdateOptions {
  /** Label tokens of the whole update: each micro-batch's loss is divided by it. */
  readonly normalizer: number
  readonly lr: number
  readonly maxGradNorm: number | undefined
  /** Which parameters decay; the Trainer's rule (no biases, no norms) by default. */
  readonly decay?: (name: string) => boolean
  /** The update's place in the run, for its noise; absent: no noise, no dropout. */
  readonly noise?: { readonly key: Omit<NoiseKey, "micro">; readonly neftuneAlpha?: number }
}

export interface UpdateResult {
  readonly loss: number
  /** The global gradient norm before clipping. */
  readonly norm: number
  /** Seconds in forward + backward (all micro-batches), and in clipping and AdamW. */
  readonly gradSeconds: number
  readonly optimizerSeconds: number
}

interface HostTensor {
  data: Float32Array
  shape: ReadonlyArray<number>
}

const product = (shape: ReadonlyArray<number>) => shape.reduce((a, b) => a * b, 1)

export class LayerwiseModel {
  readonly config: Qwen2Config
  readonly adapter: LoraPlan | undefined
  /** Base and adapter weights, by name (the master copies). */
  readonly weights: Map<string, Float32Array>
  /** The parameters that train, in the model's order. */
  readonly trainable: ReadonlyArray<string>
  /** Their gradients, summed over the micro-batches of the update in progress. */
  readonly grads = new Map<string, Float32Array>()
  /** Seconds spent so far in each phase of `accumulate` (for the benchmark's breakdown). */
  readonly seconds = { forward: 0, head: 0, backward: 0 }
  /** On wasm, the heap's size at the end of each phase, at most (where it peaked: the memory check's calibration). */
  readonly heapAfter = { forward: 0, head: 0, backward: 0 }

  private readonly specs = new Map<string, TensorSpec>()
  private readonly layerParams: ReadonlyArray<ReadonlyArray<string>>
  private readonly trains: ReadonlySet<string>
  /** Gradients not written yet in this update: the first write copies instead of adding. */
  private readonly unwritten = new Set<string>()
  /** Head tensors kept on the backend between micro-batches (see `resident`). */
  private readonly residents = new Map<string, tf.Tensor>()
  /** Per layer, what its forward pass recorded for the backward pass, in JS memory (buffers reused). */
  private readonly saved: Array<Map<string, HostTensor>> = []
  private readonly moduleIndex: ReadonlyMap<string, number>
  private readonly headName: string

  constructor(init: LayerwiseInit) {
    this.config = init.config
    this.adapter = init.adapter?.plan
    const base = parameterSpecs(init.config)
    const adapterSpecs = this.adapter?.specs ?? []
    for (const spec of [...base, ...adapterSpecs]) this.specs.set(spec.name, spec)
    this.weights = new Map([...init.weights, ...(init.adapter?.weights ?? [])])
    for (const [name, spec] of this.specs) {
      const values = this.weights.get(name)
      if (values === undefined) throw new Error(`no weights for ${name}`)
      if (values.length !== product(spec.shape)) throw new Error(`${name}: ${values.length} values for shape [${spec.shape.join(", ")}]`)
    }
    this.trainable = (this.adapter === undefined ? base : adapterSpecs).map((spec) => spec.name)
    this.trains = new Set(this.trainable)
    this.trainable.forEach((name) => this.unwritten.add(name))
    this.layerParams = Array.from({ length: init.config.num_hidden_layers }, (_, layer) => {
      const prefix = `model.layers.${layer}.`
      return [...this.specs.keys()].filter((name) => name.startsWith(prefix))
    })
    this.moduleIndex = new Map((this.adapter?.modules ?? []).map((m, i) => [m.module, i]))
    this.headName = init.config.tie_word_embeddings ? EMBEDDING : "lm_head.weight"
  }

  /** Parameters that train (the adapter's, with LoRA). */
  get trainableCount(): number {
    return this.trainable.reduce((sum, name) => sum + (this.weights.get(name)?.length ?? 0), 0)
  }

  /**
   * Forward and backward over one micro-batch, adding its gradients (its loss divided by
   * `normalizer`) into `grads`. Returns that loss.
   */
  accumulate(batch: Batch, normalizer: number, noise?: TrainingNoise): number {
    return this.accumulateWith(batch, noise, () => ({ normalizer }))
  }

  /**
   * Forward and backward over one micro-batch whose loss weighs each scored token:
   * `weigh` gets every scored token's loss under this forward pass (the head run once
   * without gradients) and returns d loss / d token loss for each, in the same order. The
   * head's gradient pass then uses those weights, and the gradients are exact for any
   * loss that is a function of the tokens' losses (DPO's, src/dpo/). Returns Σ wᵢ·CEᵢ.
   */
  accumulateWeighted(batch: Batch, weigh: (scored: ScoredPositions & { readonly losses: Float64Array }) => Float64Array, noise?: TrainingNoise): number {
    return this.accumulateWith(batch, noise, (hidden, tokens) => ({
      tokenWeights: weigh(tokenLossesFromHidden(this.headSource(), hidden, tokens, batch.labels))
    }))
  }

  private accumulateWith(batch: Batch, noise: TrainingNoise | undefined, objective: (hidden: tf.Tensor2D, tokens: TokenBatch) => Pick<LossOptions, "normalizer" | "tokenWeights">): number {
    return tf.tidy(() => {
      const tokens = tokenBatch(batch)
      const step = this.stepFor(tokens, noise)
      let mark = performance.now()
      const lap = (phase: keyof LayerwiseModel["seconds"]) => {
        const now = performance.now()
        this.seconds[phase] += (now - mark) / 1000
        this.heapAfter[phase] = Math.max(this.heapAfter[phase], wasmHeapSize(tf.backend()) ?? 0)
        mark = now
      }
      let hidden = this.embeddings(batch, noise)
      for (let layer = 0; layer < this.config.num_hidden_layers; layer++) {
        const weights = this.upload(this.layerParams[layer]!)
        const source = this.source(weights)
        // Block by block, each in its own tidy: only what the backward pass needs outlives one.
        for (const block of [attentionBlock, mlpBlock] as const) {
          const { next, ...recorded } = tf.tidy(() => {
            const kept: Record<string, tf.Tensor> = {}
            const out = block(source, layer, hidden, { ...step, record: (name, tensor) => (kept[name] = tensor) })
            return { ...kept, next: "cache" in out ? out.hidden : out }
          })
          this.store(layer, recorded) // disposes them, the block's input among them
          hidden = next
        }
        weights.forEach((tensor) => tensor.dispose())
      }
      lap("forward")
      const head = headLossAndGrads(this.headSource(), hidden, tokens, batch.labels, {
        ...objective(hidden, tokens),
        trainNorm: this.trains.has(FINAL_NORM),
        headGradient: this.trains.has(this.headName) ? (slice, start) => this.addHeadSlice(slice, start) : undefined
      })
      hidden.dispose()
      if (head.norm !== undefined) this.addGradient(FINAL_NORM, head.norm)
      lap("head")
      let dHidden = head.dHidden
      for (let layer = this.config.num_hidden_layers - 1; layer >= 0; layer--) {
        const weights = this.upload(this.layerParams[layer]!)
        const saved = this.restore(layer)
        const result = decoderLayerBackward(this.source(weights), layer, saved, step, dHidden, {
          weightGrads: this.adapter === undefined,
          ...(step.dropout !== undefined && { dropoutMask: (module: string) => this.dropoutMaskOf(module, noise!.key, tokens) })
        })
        dHidden.dispose()
        saved.forEach((tensor) => tensor.dispose())
        weights.forEach((tensor) => tensor.dispose())
        const missing = this.layerParams[layer]!.filter((name) => this.trains.has(name) && !result.grads.has(name))
        if (missing.length > 0) throw new Error(`the backward pass of layer ${layer} gave no gradient for ${missing.join(", ")}`)
        for (const [name, grad] of result.grads) this.addGradient(name, grad)
        dHidden = result.dHidden
      }
      if (this.trains.has(EMBEDDING)) this.addEmbeddingRows(batch.inputIds, dHidden)
      lap("backward")
      return head.loss
    })
  }

  /** The mean loss over a batch's label tokens, forward only (no noise, no dropout): the Trainer's eval loss of one batch. */
  evalLoss(batch: Batch): number {
    return tf.tidy(() => lossFromLastHidden(this.headSource(), this.lastHidden(batch), tokenBatch(batch), batch.labels))
  }

  /**
   * Each scored token's loss, forward only (no noise, no dropout), in `scoredPositions`
   * order. With `adapterOff`, the base's alone (PEFT's `disable_adapter`): the reference
   * of LoRA preference training.
   */
  tokenLosses(batch: Batch, options: { readonly adapterOff?: boolean } = {}): ScoredPositions & { readonly losses: Float64Array } {
    const hidden = this.lastHidden(batch, options.adapterOff === true)
    try {
      return tokenLossesFromHidden(this.headSource(), hidden, tokenBatch(batch), batch.labels)
    } finally {
      hidden.dispose()
    }
  }

  /** The last layer's output for a batch, forward only, one layer's weights on the backend at a time (the base's alone with `adapterOff`). */
  private lastHidden(batch: Batch, adapterOff = false): tf.Tensor2D {
    return tf.tidy(() => {
      const tokens = tokenBatch(batch)
      const { step } = prepareStep(this.config, tokens)
      let hidden = this.embeddings(batch, undefined)
      for (let layer = 0; layer < this.config.num_hidden_layers; layer++) {
        const weights = this.upload(this.layerParams[layer]!)
        const source = adapterOff ? { config: this.config, params: weights } : this.source(weights)
        const next = tf.tidy(() => decoderLayer(source, layer, hidden, step).hidden)
        weights.forEach((tensor) => tensor.dispose())
        hidden.dispose()
        hidden = next
      }
      return hidden
    })
  }

  /** Drops the update's accumulated gradients (a diverged update is not applied). */
  discardGradients(): void {
    this.trainable.forEach((name) => this.unwritten.add(name))
  }

  /** The global L2 norm of the accumulated gradients (float64 sums, as torch's norm). */
  gradientNorm(): number {
    let squares = 0
    for (const name of this.trainable) if (!this.unwritten.has(name)) squares += squaredNorm(this.grads.get(name)!)
    return Math.sqrt(squares)
  }

  /** AdamW over the trained weights, in place, with clipping as a coefficient; starts the next update's gradients afresh. */
  applyUpdate(optimizer: AdamW, lr: number, clipScale: number, decay: (name: string) => boolean): void {
    // The backend may hold a reference to the host array (cpu does): release before writing.
    this.releaseTrained()
    optimizer.beginStep()
    for (const name of this.trainable) {
      const grad = this.gradientOf(name)
      optimizer.update(name, this.weights.get(name)!, grad, lr, decay(name), clipScale)
      this.unwritten.add(name)
    }
  }

  /** One optimizer update over micro-batches: forward/backward each, clip, AdamW. What `updateStep` does on the tape. */
  update(optimizer: AdamW, batches: ReadonlyArray<Batch>, options: UpdateOptions): UpdateResult {
    const started = performance.now()
    let loss = 0
    batches.forEach((batch, micro) => {
      const noise = options.noise === undefined ? undefined : { ...options.noise, key: { ...options.noise.key, micro } }
      loss += this.accumulate(batch, options.normalizer, noise)
    })
    const gradDone = performance.now()
    const norm = this.gradientNorm()
    const gradSeconds = (gradDone - started) / 1000
    if (!Number.isFinite(loss) || !Number.isFinite(norm)) {
      this.discardGradients()
      return { loss, norm, gradSeconds, optimizerSeconds: 0 }
    }
    this.applyUpdate(optimizer, options.lr, clipCoefficient(norm, options.maxGradNorm), options.decay ?? decays)
    return { loss, norm, gradSeconds, optimizerSeconds: (performance.now() - gradDone) / 1000 }
  }

  /** Writes `weights` over the trained parameters' values (a checkpoint's, say). */
  overwrite(weights: ReadonlyMap<string, Float32Array>): void {
    this.releaseTrained()
    for (const name of this.trainable) {
      const values = weights.get(name)
      if (values === undefined) throw new Error(`no weights for ${name}`)
      this.weights.get(name)!.set(values)
    }
  }

  /** Releases what is kept on the backend. The JS arrays stay usable. */
  dispose(): void {
    this.residents.forEach((tensor) => tensor.dispose())
    this.residents.clear()
  }

  // -------------------------------------------------------------------------------------

  private source(params: ReadonlyMap<string, tf.Tensor>): ParamSource {
    return { config: this.config, params, ...(this.adapter !== undefined && { adapter: this.adapter }) }
  }

  private headSource(): ParamSource {
    return { config: this.config, params: new Map([[FINAL_NORM, this.resident(FINAL_NORM)], [this.headName, this.resident(this.headName)]]) }
  }

  /** A parameter's JS values on the backend, as a new tensor (the caller disposes it). */
  private uploadOne(name: string): tf.Tensor {
    const spec = this.specs.get(name)!
    return tf.tensor(this.weights.get(name)!, [...spec.shape], "float32")
  }

  private upload(names: ReadonlyArray<string>): Map<string, tf.Tensor> {
    return new Map(names.map((name) => [name, this.uploadOne(name)]))
  }

  /**
   * The head's tensors stay on the backend between micro-batches: the tied embedding is
   * 545 MB at Qwen2.5's vocabulary. Frozen (LoRA), they stay for the whole run.
   */
  private resident(name: string): tf.Tensor {
    let tensor = this.residents.get(name)
    if (tensor === undefined) {
      tensor = tf.keep(this.uploadOne(name))
      this.residents.set(name, tensor)
    }
    return tensor
  }

  private releaseTrained(): void {
    for (const [name, tensor] of this.residents) {
      if (!this.trains.has(name)) continue
      tensor.dispose()
      this.residents.delete(name)
    }
  }

  private stepFor(tokens: TokenBatch, noise: TrainingNoise | undefined): Step {
    const { step } = prepareStep(this.config, tokens)
    const p = this.adapter?.dropout ?? 0
    if (noise === undefined || p === 0) return step
    return { ...step, dropout: (module, x) => tf.mul(x, this.dropoutMaskOf(module, noise.key, tokens)) }
  }

  private dropoutMaskOf(module: string, key: NoiseKey, tokens: TokenBatch): tf.Tensor2D {
    const plan = this.adapter!
    const index = this.moduleIndex.get(module)!
    const cols = plan.modules[index]!.inFeatures
    const rows = tokens.batchSize * tokens.seqLen
    return tf.tensor2d(dropoutMask(plan.dropout, key, index, rows, cols), [rows, cols])
  }

  /** The input embeddings [B*T, H], looked up in the JS table, with NEFTune's noise when training asks for it. */
  private embeddings(batch: Batch, noise: TrainingNoise | undefined): tf.Tensor2D {
    const { hidden_size: width, vocab_size: vocab } = this.config
    const table = this.weights.get(EMBEDDING)!
    const rows = batch.inputIds.length
    const out = noise?.neftuneAlpha ? neftuneNoise(noise.neftuneAlpha, noise.key, rows, batch.length, width) : new Float32Array(rows * width)
    batch.inputIds.forEach((id, r) => {
      if (id < 0 || id >= vocab) throw new RangeError(`token id ${id} is outside the vocabulary of ${vocab}`)
      const from = id * width
      const to = r * width
      for (let j = 0; j < width; j++) out[to + j] = table[from + j]! + out[to + j]!
    })
    return tf.tensor2d(out, [rows, width])
  }

  /** Copies recorded tensors into this layer's JS buffers (growing them as needed) and disposes them. */
  private store(layer: number, recorded: Record<string, tf.Tensor>): void {
    const slot = (this.saved[layer] ??= new Map())
    for (const [name, tensor] of Object.entries(recorded)) {
      let entry = slot.get(name)
      if (entry === undefined || entry.data.length < tensor.size) {
        entry = { data: new Float32Array(tensor.size), shape: [] }
        slot.set(name, entry)
      }
      entry.data.set(readView(tensor))
      entry.shape = tensor.shape
      tensor.dispose()
    }
  }

  /** What `store` kept, back on the backend as new tensors (the caller disposes them). */
  private restore(layer: number): Map<string, tf.Tensor> {
    const slot = this.saved[layer]
    if (slot === undefined) throw new Error(`layer ${layer} has no recorded activations`)
    return new Map([...slot].map(([name, { data, shape }]) => [name, tf.tensor(data.subarray(0, product(shape)), [...shape], "float32")]))
  }

  private gradientOf(name: string): Float32Array {
    let grad = this.grads.get(name)
    if (grad === undefined) {
      grad = new Float32Array(this.weights.get(name)!.length)
      this.grads.set(name, grad)
    } else if (this.unwritten.has(name)) grad.fill(0)
    return grad
  }

  /** grads[name] += grad (the first write of an update copies), then disposes `grad`. */
  private addGradient(name: string, grad: tf.Tensor): void {
    const first = this.unwritten.has(name)
    const target = this.grads.get(name) ?? new Float32Array(grad.size)
    this.grads.set(name, target)
    const values = readView(grad)
    if (first) target.set(values)
    else for (let i = 0; i < target.length; i++) target[i] = target[i]! + values[i]!
    this.unwritten.delete(name)
    grad.dispose()
  }

  /** Adds a slice of the head weight's gradient (vocabulary entries from `start`; see `WeightGradient`), then disposes it. */
  private addHeadSlice(slice: tf.Tensor, start: number): void {
    const target = this.gradientOf(this.headName)
    this.unwritten.delete(this.headName)
    const values = readView(slice)
    if (this.config.tie_word_embeddings) {
      // Rows start.. of the [V, H] embedding: one contiguous run.
      const offset = start * this.config.hidden_size
      for (let i = 0; i < values.length; i++) target[offset + i] = target[offset + i]! + values[i]!
    } else {
      // Columns start.. of the [H, V] head: a run per hidden unit.
      const { vocab_size: vocab } = this.config
      const size = slice.shape[1]!
      for (let row = 0; row < slice.shape[0]!; row++) {
        const to = row * vocab + start
        const from = row * size
        for (let i = 0; i < size; i++) target[to + i] = target[to + i]! + values[from + i]!
      }
    }
    slice.dispose()
  }

  /** The embedding's gradient gets d hidden₀'s rows at the batch's ids (the lookup's gradient), then disposes it. */
  private addEmbeddingRows(ids: Int32Array, dHidden: tf.Tensor): void {
    const target = this.gradientOf(EMBEDDING)
    this.unwritten.delete(EMBEDDING)
    const width = this.config.hidden_size
    const rows = readView(dHidden)
    ids.forEach((id, r) => {
      const to = id * width
      const from = r * width
      for (let j = 0; j < width; j++) target[to + j] = target[to + j]! + rows[from + j]!
    })
    dHidden.dispose()
  }
}

const tokenBatch = (batch: Batch): TokenBatch => ({
  batchSize: batch.size,
  seqLen: batch.length,
  inputIds: batch.inputIds,
  attentionMask: batch.attentionMask
})
