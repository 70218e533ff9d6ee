/**
 * The randomness of a training step, drawn from streams named by (seed, step, micro-batch,
 * …) so that a resumed run draws exactly what an uninterrupted one would, on any backend:
 *
 * - NEFTune (`neftune_noise_alpha`): the input embeddings get uniform(−1, 1) · α / √(L·d)
 *   noise, L the batch's padded length and d the hidden size, as transformers' and TRL's
 *   `neftune_post_forward_hook` adds it. Training only: never in evaluation or generation.
 * - LoRA dropout (`lora_dropout` p): each adapted module's input is multiplied by a mask of
 *   0 and 1/(1 − p), its own per module, as `nn.Dropout` in PEFT's LoraLayer.
 */
import { KeyedStream } from "../random.ts"

const NEFTUNE_STREAM = 0x4e454654 // "NEFT"
const DROPOUT_STREAM = 0x44524f50 // "DROP"

/** Where a micro-batch sits in the run: what its noise is keyed by. */
export interface NoiseKey {
  readonly seed: number
  /** The optimizer step (0-based) and the micro-batch within it. */
  readonly step: number
  readonly micro: number
}

/** NEFTune's noise for a batch of `rows` positions padded to `seqLen`, hidden size `hidden`: [rows·hidden]. */
export const neftuneNoise = (alpha: number, key: NoiseKey, rows: number, seqLen: number, hidden: number): Float32Array => {
  const magnitude = alpha / Math.sqrt(seqLen * hidden)
  return new KeyedStream([key.seed, NEFTUNE_STREAM, key.step, key.micro]).uniform(rows * hidden, -magnitude, magnitude)
}

/** The dropout mask of module number `module`'s input [rows, cols]: 0 with probability p, else 1/(1 − p). */
export const dropoutMask = (p: number, key: NoiseKey, module: number, rows: number, cols: number): Float32Array => {
  const stream = new KeyedStream([key.seed, DROPOUT_STREAM, key.step, key.micro, module])
  const mask = new Float32Array(rows * cols)
  const kept = 1 / (1 - p)
  // 24 random bits per element, compared as in `nextFloat() < p`.
  const threshold = p * 2 ** 24
  for (let i = 0; i < mask.length; i++) mask[i] = stream.nextUint32() >>> 8 < threshold ? 0 : kept
  return mask
}
