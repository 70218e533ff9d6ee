import { describe, expect, it } from "vitest"
import { AdamW, clipCoefficient, decays, globalNorm } from "../src/train/adamw.ts"
import { collate } from "../src/train/collate.ts"
import { lrMultiplier, totalSteps, updatesPerEpoch, warmupStepsFor } from "../src/train/schedule.ts"

describe("learning-rate schedules (transformers' get_scheduler)", () => {
  it("cosine with warmup starts at 0, peaks after warmup, ends at 0", () => {
    const total = 100
    const warmup = warmupStepsFor(total, 0, 0.1)
    expect(warmup).toBe(10)
    expect(lrMultiplier("cosine", 0, warmup, total)).toBe(0)
    expect(lrMultiplier("cosine", 5, warmup, total)).toBe(0.5)
    expect(lrMultiplier("cosine", 10, warmup, total)).toBe(1)
    expect(lrMultiplier("cosine", 55, warmup, total)).toBeCloseTo(0.5, 12)
    expect(lrMultiplier("cosine", 100, warmup, total)).toBeCloseTo(0, 12)
    // 0.5 * (1 + cos(pi * 20/90)), as transformers computes it
    expect(lrMultiplier("cosine", 30, warmup, total)).toBeCloseTo(0.5 * (1 + Math.cos((Math.PI * 20) / 90)), 12)
  })

  it("linear decays to 0; constant ignores warmup; ratios round up", () => {
    expect(lrMultiplier("linear", 55, 10, 100)).toBeCloseTo(0.5, 12)
    expect(lrMultiplier("linear", 120, 10, 100)).toBe(0)
    expect(lrMultiplier("constant", 0, 10, 100)).toBe(1)
    expect(lrMultiplier("constant_with_warmup", 2, 10, 100)).toBe(0.2)
    expect(warmupStepsFor(748, 0, 0.1)).toBe(75)
    expect(warmupStepsFor(748, 20, 0.1)).toBe(20)
  })

  it("counts updates as the Trainer does: the tutorial's 7,473 rows, batch 5, accumulation 4, 2 epochs", () => {
    const microBatches = Math.ceil(7473 / 5)
    expect(updatesPerEpoch(microBatches, 4)).toBe(374)
    expect(totalSteps({ maxSteps: 0, epochs: 2, updatesPerEpoch: 374 })).toBe(748)
    expect(totalSteps({ maxSteps: 50, epochs: 2, updatesPerEpoch: 374 })).toBe(50)
  })
})

describe("AdamW (torch.optim.AdamW)", () => {
  it("matches torch's update for two steps", () => {
    // torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01) with
    // p = [1.0, -2.0], grads [0.5, -0.25] then [0.1, 0.3]; computed by hand from torch's algorithm:
    // p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
    const p = new Float32Array([1, -2])
    const adam = new AdamW({ beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 })
    adam.beginStep()
    adam.update("w", p, new Float32Array([0.5, -0.25]), 0.1, true)
    // step 1: m̂ = g, v̂ = g², so the update is lr * sign(g) (up to eps)
    expect(p[0]).toBeCloseTo(1 * (1 - 0.001) - 0.1, 6)
    expect(p[1]).toBeCloseTo(-2 * (1 - 0.001) + 0.1, 6)
    adam.beginStep()
    adam.update("w", p, new Float32Array([0.1, 0.3]), 0.1, true)
    const m = 0.9 * 0.05 + 0.1 * 0.1
    const v = 0.999 * 0.00025 + 0.001 * 0.01
    const expected = (1 * 0.999 - 0.1) * 0.999 - (0.1 / (1 - 0.81)) * (m / (Math.sqrt(v) / Math.sqrt(1 - 0.999 ** 2) + 1e-8))
    expect(p[0]).toBeCloseTo(expected, 6)
  })

  it("skips decay for biases and norms, clips by the global norm", () => {
    expect(decays("model.layers.0.self_attn.q_proj.weight")).toBe(true)
    expect(decays("model.layers.0.self_attn.q_proj.bias")).toBe(false)
    expect(decays("model.layers.0.input_layernorm.weight")).toBe(false)
    expect(decays("model.norm.weight")).toBe(false)
    const grads = [new Float32Array([3, 0]), new Float32Array([4])]
    const norm = globalNorm(grads)
    expect(norm).toBeCloseTo(5, 6)
    expect(clipCoefficient(norm, 1)).toBeCloseTo(0.2, 6)
    expect(clipCoefficient(0.3, 1)).toBe(1)
    expect(clipCoefficient(0.3, undefined)).toBe(1)
  })

  it("applies the clipping coefficient inside the update exactly as pre-scaled float32 gradients", () => {
    const grad = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i * 1.7) * 3)
    const coefficient = clipCoefficient(globalNorm([grad]), 1)
    expect(coefficient).toBeLessThan(1)
    const prescaled = grad.map((g) => g * coefficient) // rounded to float32, as torch's grad.mul_
    const a = Float32Array.from({ length: 64 }, (_, i) => Math.cos(i))
    const b = a.slice()
    const first = new AdamW({ beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 })
    const second = new AdamW({ beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 })
    for (let step = 0; step < 3; step++) {
      first.beginStep()
      second.beginStep()
      first.update("w", a, grad, 1e-3, true, coefficient)
      second.update("w", b, prescaled, 1e-3, true)
    }
    expect(Array.from(a)).toEqual(Array.from(b))
    expect(grad[1]).toBe(Math.fround(Math.sin(1.7) * 3)) // the gradient itself is left alone
  })
})

describe("collation (DataCollatorForSeq2Seq)", () => {
  it("right-pads with the pad id and -100, and counts shifted label tokens", () => {
    const batch = collate(
      [
        { inputIds: Int32Array.from([5, 6, 7, 8]), labels: Int32Array.from([-100, -100, 7, 8]) },
        { inputIds: Int32Array.from([9, 10]), labels: Int32Array.from([-100, 10]) }
      ],
      0
    )
    expect(batch.length).toBe(4)
    expect(Array.from(batch.inputIds)).toEqual([5, 6, 7, 8, 9, 10, 0, 0])
    expect(Array.from(batch.labels)).toEqual([-100, -100, 7, 8, -100, 10, -100, -100])
    expect(Array.from(batch.attentionMask)).toEqual([1, 1, 1, 1, 1, 1, 0, 0])
    expect(batch.labelTokens).toBe(3)
    expect(batch.tokens).toBe(6)
  })
})
