/**
 * AdamW with decoupled weight decay, in place on Float32Arrays, as
 * `torch.optim.AdamW` computes it. The moments live in JS memory, outside the
 * wasm heap: at 0.5B parameters the heap cannot hold weights, gradients and two
 * moments at once (see ../shared/notes/tfjs-wasm.md), and one fused loop over a
 * typed array is much faster than a chain of tensor ops.
 */
export interface AdamWHyper {
  readonly lr: number
  readonly beta1: number
  readonly beta2: number
  readonly eps: number
  readonly weightDecay: number
}

export interface AdamWParamState {
  readonly m: Float32Array
  readonly v: Float32Array
}

export class AdamW {
  /** Updates taken so far (torch's per-parameter `step`, shared since all move together). */
  step = 0
  readonly state = new Map<string, AdamWParamState>()

  constructor(readonly hyper: Omit<AdamWHyper, "lr">) {}

  private stateOf(name: string, size: number): AdamWParamState {
    let state = this.state.get(name)
    if (state === undefined) {
      state = { m: new Float32Array(size), v: new Float32Array(size) }
      this.state.set(name, state)
    }
    return state
  }

  /** Starts one optimizer step; call `update` for each parameter afterwards. */
  beginStep(): void {
    this.step += 1
  }

  /**
   * Applies this step to one parameter, in place. `decay` is false for biases and norms.
   * `gradScale` is the clipping coefficient: each gradient is scaled and rounded to
   * float32 as torch's in-place `grad.mul_(clip_coef)` leaves it, without a pass of its own.
   */
  update(name: string, param: Float32Array, grad: Float32Array, lr: number, decay: boolean, gradScale = 1): void {
    const { beta1, beta2, eps } = this.hyper
    const { m, v } = this.stateOf(name, param.length)
    const decayFactor = decay ? 1 - lr * this.hyper.weightDecay : 1
    const biasCorrection1 = 1 - beta1 ** this.step
    const biasCorrection2Sqrt = Math.sqrt(1 - beta2 ** this.step)
    const stepSize = lr / biasCorrection1
    const scaled = gradScale !== 1
    for (let i = 0; i < param.length; i++) {
      const g = scaled ? Math.fround(grad[i]! * gradScale) : grad[i]!
      const mi = beta1 * m[i]! + (1 - beta1) * g
      const vi = beta2 * v[i]! + (1 - beta2) * g * g
      m[i] = mi
      v[i] = vi
      param[i] = param[i]! * decayFactor - stepSize * (mi / (Math.sqrt(vi) / biasCorrection2Sqrt + eps))
    }
  }
}

/** Σ g² of one gradient, in float64 (torch accumulates float32 norms in higher precision). */
export const squaredNorm = (grad: Float32Array): number => {
  let sum = 0
  for (let i = 0; i < grad.length; i++) sum += grad[i]! * grad[i]!
  return sum
}

/** The global L2 norm of all gradients. */
export const globalNorm = (grads: Iterable<Float32Array>): number => {
  let sum = 0
  for (const grad of grads) sum += squaredNorm(grad)
  return Math.sqrt(sum)
}

/**
 * `torch.nn.utils.clip_grad_norm_`'s coefficient, min(1, max / (norm + 1e-6)): what every
 * gradient is multiplied by. Pass it to `AdamW.update` as `gradScale`.
 */
export const clipCoefficient = (norm: number, maxNorm: number | undefined): number =>
  maxNorm === undefined ? 1 : Math.min(1, maxNorm / (norm + 1e-6))

/** The Trainer's rule: biases and normalisation weights get no weight decay. */
export const decays = (parameterName: string): boolean => !/(^|\.)bias$|norm/.test(parameterName)
