/**
 * The loss's conventions beyond the parity batch: the explicit normalizer that gradient
 * accumulation needs, batches with nothing to score, bad labels, and initialisation
 * from a config alone.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as tf from "@tensorflow/tfjs-core"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { updateWeightInPlace } from "../src/backend/in-place.ts"
import { initBackend } from "../src/backend/select.ts"
import { decodeConfig } from "../src/model/config.ts"
import { loadHfFolder } from "../src/model/hf-folder.ts"
import { causalLmLoss, expNonPositive, lossAndGrads, scoredPositions } from "../src/model/loss.ts"
import { disposeModel, initModel, type Qwen2, type TokenBatch } from "../src/model/qwen2.ts"

// One wasm thread: test files run two at a time on two cores, where a thread pool is
// oversubscribed and slower, not faster. backend-threads.test.ts tests the pool.
const THREADS = 1

const FIXTURE = path.resolve(__dirname, "../../shared/fixtures/qwen2-tiny")
const golden = JSON.parse(readFileSync(path.join(FIXTURE, "golden.json"), "utf8")) as {
  batch: { input_ids: Array<Array<number>>; attention_mask: Array<Array<number>>; labels: Array<Array<number>> }
  forward: { loss: number }
  adamw_same_batch: { loss_trajectory: Array<number>; hyper: { lr: number; betas: [number, number]; eps: number; weight_decay: number } }
}

const row = (i: number): { batch: TokenBatch; labels: Int32Array } => ({
  batch: {
    batchSize: 1,
    seqLen: golden.batch.input_ids[i]?.length ?? 0,
    inputIds: Int32Array.from(golden.batch.input_ids[i] ?? []),
    attentionMask: Int32Array.from(golden.batch.attention_mask[i] ?? [])
  },
  labels: Int32Array.from(golden.batch.labels[i] ?? [])
})

/** Both golden rows as one batch of 2 × 12. */
const both = (): { batch: TokenBatch; labels: Int32Array } => ({
  batch: {
    batchSize: 2,
    seqLen: 12,
    inputIds: Int32Array.from(golden.batch.input_ids.flat()),
    attentionMask: Int32Array.from(golden.batch.attention_mask.flat())
  },
  labels: Int32Array.from(golden.batch.labels.flat())
})

describe("loss", () => {
  let model: Qwen2
  beforeAll(async () => {
    await initBackend({ backend: "wasm", threads: THREADS })
    model = (await Effect.runPromise(loadHfFolder(FIXTURE).pipe(Effect.provide(NodeContext.layer)))).model
  })
  afterAll(() => disposeModel(model))

  it("shifts labels inside: position t is scored against label t + 1", () => {
    const labels = Int32Array.from([-100, 5, -100, 7, 8, -100, 9, 1])
    expect(scoredPositions(labels, 2, 4)).toEqual({ rows: Int32Array.from([0, 2, 5, 6]), targets: Int32Array.from([5, 7, 9, 1]) })
  })

  it("accumulates: micro-batches with the batch's normalizer sum to the whole batch", () => {
    const { batch, labels } = both()
    const whole = lossAndGrads(model, batch, labels)
    const parts = [row(0), row(1)].map(({ batch, labels }) => lossAndGrads(model, batch, labels, { normalizer: whole.tokens }))
    expect(parts.map((part) => part.tokens)).toEqual([8, 4])
    expect(Math.abs((parts[0]?.loss ?? 0) + (parts[1]?.loss ?? 0) - golden.forward.loss)).toBeLessThan(1e-5)
    for (const [name, grad] of whole.grads) {
      const summed = tf.tidy(() => tf.add(parts[0]?.grads.get(name) ?? tf.scalar(NaN), parts[1]?.grads.get(name) ?? tf.scalar(NaN)))
      const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(summed, grad))).dataSync()[0] ?? NaN)
      expect(diff, name).toBeLessThan(1e-6)
      summed.dispose()
    }
    for (const result of [whole, ...parts]) result.grads.forEach((grad) => grad.dispose())
  })

  it("passes through the head in chunks of scored rows with the same loss and gradients as in one", () => {
    const { batch, labels } = both()
    const whole = lossAndGrads(model, batch, labels)
    const chunked = lossAndGrads(model, batch, labels, { headRows: 5 }) // 12 scored rows: 5, 5, 2
    expect(Math.abs(chunked.loss - whole.loss)).toBeLessThan(1e-6)
    expect(Math.abs(chunked.loss - golden.forward.loss)).toBeLessThan(1e-5)
    const evaluated = tf.tidy(() => causalLmLoss(model, batch, labels, { headRows: 5 }).dataSync()[0] ?? NaN)
    expect(Math.abs(evaluated - whole.loss)).toBeLessThan(1e-6)
    for (const [name, grad] of whole.grads) {
      const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(chunked.grads.get(name)!, grad))).dataSync()[0] ?? NaN)
      const size = tf.tidy(() => tf.max(tf.abs(grad)).dataSync()[0] ?? NaN)
      expect(diff, name).toBeLessThanOrEqual(1e-6 * Math.max(1, size))
    }
    for (const result of [whole, chunked]) result.grads.forEach((grad) => grad.dispose())
  })

  it("divides by an explicit normalizer", () => {
    const { batch, labels } = row(0)
    const [own, halved] = [undefined, 16].map((normalizer) =>
      tf.tidy(() => causalLmLoss(model, batch, labels, normalizer === undefined ? {} : { normalizer }).dataSync()[0] ?? NaN))
    expect(halved).toBeCloseTo((own ?? NaN) / 2, 6)
  })

  it("gives zero loss and zero gradients when nothing is scored", () => {
    const { batch } = row(0)
    const { loss, tokens, grads } = lossAndGrads(model, batch, new Int32Array(12).fill(-100))
    expect([loss, tokens]).toEqual([0, 0])
    expect([...grads.values()].every((grad) => tf.tidy(() => tf.max(tf.abs(grad)).dataSync()[0]) === 0)).toBe(true)
    grads.forEach((grad) => grad.dispose())
  })

  it("trains: AdamW steps written in place follow transformers' loss trajectory", async () => {
    // A minimal torch.optim.AdamW, only to check that updated weights are used (never
    // stale packed copies) and that the gradients stay right step after step.
    const fresh = (await Effect.runPromise(loadHfFolder(FIXTURE).pipe(Effect.provide(NodeContext.layer)))).model
    const { lr, betas, eps, weight_decay } = golden.adamw_same_batch.hyper
    const { batch, labels } = both()
    const moments = new Map([...fresh.params].map(([name, v]) => [name, { m: new Float32Array(v.size), v: new Float32Array(v.size) }]))
    const losses: Array<number> = []
    for (let step = 1; step <= 10; step++) {
      const { loss, grads } = lossAndGrads(fresh, batch, labels)
      losses.push(loss)
      for (const [name, variable] of fresh.params) {
        const grad = grads.get(name)?.dataSync() ?? new Float32Array(0)
        const state = moments.get(name) ?? { m: new Float32Array(0), v: new Float32Array(0) }
        updateWeightInPlace(variable, (w) => {
          for (let i = 0; i < w.length; i++) {
            const g = grad[i] ?? 0
            state.m[i] = betas[0] * (state.m[i] ?? 0) + (1 - betas[0]) * g
            state.v[i] = betas[1] * (state.v[i] ?? 0) + (1 - betas[1]) * g * g
            const mHat = (state.m[i] ?? 0) / (1 - betas[0] ** step)
            const vHat = (state.v[i] ?? 0) / (1 - betas[1] ** step)
            w[i] = (w[i] ?? 0) * (1 - lr * weight_decay) - (lr * mHat) / (Math.sqrt(vHat) + eps)
          }
        })
      }
      grads.forEach((grad) => grad.dispose())
    }
    const last = lossAndGrads(fresh, batch, labels)
    losses.push(last.loss)
    last.grads.forEach((grad) => grad.dispose())
    golden.adamw_same_batch.loss_trajectory.forEach((expected, i) => expect(Math.abs((losses[i] ?? NaN) - expected), `step ${i}`).toBeLessThan(1e-3))
    disposeModel(fresh)
  })

  it("refuses a label outside the vocabulary", () => {
    const { batch, labels } = row(0)
    const bad = labels.slice()
    bad[5] = 512
    expect(() => causalLmLoss(model, batch, bad)).toThrow(/label 512 is outside the vocabulary of 512/)
  })
})

describe("initModel", () => {
  const config = Effect.runSync(decodeConfig({ ...JSON.parse(readFileSync(path.join(FIXTURE, "config.json"), "utf8")), pad_token_id: 3 }, "config"))

  it("initialises as transformers does, deterministically in the seed", async () => {
    await initBackend({ backend: "wasm", threads: THREADS })
    const [a, b, c] = [1, 1, 2].map((seed) => initModel(config, seed))
    const values = (m: Qwen2 | undefined, name: string) => Array.from(m?.params.get(name)?.dataSync() ?? [])
    const q = "model.layers.0.self_attn.q_proj.weight"
    expect(values(a, q)).toEqual(values(b, q))
    expect(values(a, q)).not.toEqual(values(c, q))
    const weights = values(a, q)
    const std = Math.sqrt(weights.reduce((s, x) => s + x * x, 0) / weights.length)
    expect(std).toBeGreaterThan(0.095)
    expect(std).toBeLessThan(0.105)
    expect(values(a, "model.layers.0.self_attn.q_proj.bias").every((x) => x === 0)).toBe(true)
    expect(values(a, "model.norm.weight").every((x) => x === 1)).toBe(true)
    const embedding = values(a, "model.embed_tokens.weight")
    expect(embedding.slice(3 * 64, 4 * 64).every((x) => x === 0)).toBe(true)
    expect(embedding.slice(2 * 64, 3 * 64).some((x) => x !== 0)).toBe(true)
    ;[a, b, c].forEach((m) => m && disposeModel(m))
  })
})

describe("an untied Llama model", () => {
  // No reference from transformers here: wasm must agree with cpu, on a head that is not
  // the embedding (the [N, V] layout of the fused cross-entropy) and Llama's o_proj bias.
  const config = Effect.runSync(
    decodeConfig(
      {
        architectures: ["LlamaForCausalLM"],
        vocab_size: 300,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 1,
        attention_bias: true,
        tie_word_embeddings: false,
        initializer_range: 0.2
      },
      "llama"
    )
  )
  const batch = { batchSize: 2, seqLen: 6, inputIds: Int32Array.from([5, 17, 299, 3, 0, 42, 8, 8, 120, 7, 250, 1]) }
  const labels = Int32Array.from([-100, 17, 299, 3, 0, 42, -100, -100, 120, 7, 250, -100])

  const run = async (backend: "wasm" | "cpu") => {
    await initBackend({ backend, threads: THREADS })
    const model = initModel(config, 3)
    // Non-zero biases, so that their gradients and o_proj's are exercised.
    for (const [name, variable] of model.params) {
      if (!name.endsWith(".bias")) continue
      const bias = tf.randomNormal(variable.shape, 0, 0.1, "float32", name.length)
      variable.assign(bias)
      bias.dispose()
    }
    const { loss, grads } = lossAndGrads(model, batch, labels)
    const norms = new Map([...grads].map(([name, grad]) => [name, Math.hypot(...grad.dataSync())]))
    grads.forEach((grad) => grad.dispose())
    // The [N, V] layout through the head in passes of 3 scored rows (8 in all).
    const chunked = lossAndGrads(model, batch, labels, { headRows: 3 })
    const chunkedNorms = new Map([...chunked.grads].map(([name, grad]) => [name, Math.hypot(...grad.dataSync())]))
    chunked.grads.forEach((grad) => grad.dispose())
    disposeModel(model)
    return { loss, norms, chunkedLoss: chunked.loss, chunkedNorms }
  }

  it("gives the same loss and gradients on wasm and cpu", async () => {
    const wasm = await run("wasm")
    const cpu = await run("cpu")
    expect(Math.abs(wasm.loss - cpu.loss)).toBeLessThan(1e-5)
    expect([...wasm.norms.keys()]).toContain("lm_head.weight")
    expect([...wasm.norms.keys()]).toContain("model.layers.1.self_attn.o_proj.bias")
    for (const [name, norm] of cpu.norms) {
      expect(norm, name).toBeGreaterThan(0)
      expect(Math.abs((wasm.norms.get(name) ?? NaN) - norm) / norm, name).toBeLessThan(1e-4)
    }
    for (const result of [wasm, cpu]) {
      expect(Math.abs(result.chunkedLoss - result.loss)).toBeLessThan(1e-6)
      for (const [name, norm] of result.norms) expect(Math.abs((result.chunkedNorms.get(name) ?? NaN) - norm) / norm, name).toBeLessThan(1e-5)
    }
  })
})

describe("expNonPositive (the softmax's exp)", () => {
  it("is within 1.2e-7 of Math.exp on [−708, 0], 0 below −745, and keeps NaN", () => {
    let worst = 0
    for (let i = 0; i <= 200_000; i++) {
      const x = -708 * (i / 200_000) ** 3 // dense near 0, where softmax's mass is
      const want = Math.exp(x)
      if (want > 0) worst = Math.max(worst, Math.abs(expNonPositive(x) - want) / want)
    }
    for (const x of [0, -1e-30, -0.5 * Math.LN2, 0.5 * -Math.LN2 - 1e-12, -Math.LN2, -1, -20.5, -87.3, -103.9]) {
      worst = Math.max(worst, Math.abs(expNonPositive(x) - Math.exp(x)) / Math.exp(x))
    }
    expect(worst).toBeLessThan(1.2e-7)
    expect(worst).toBeGreaterThan(0) // a polynomial, not Math.exp in disguise
    expect(expNonPositive(0)).toBe(1)
    expect(expNonPositive(-746)).toBe(0)
    for (let x = -745; x < -700; x += 0.01) expect(expNonPositive(x)).toBeGreaterThanOrEqual(0) // no hole in the table
    expect(expNonPositive(Number.NEGATIVE_INFINITY)).toBe(0)
    expect(expNonPositive(Number.NaN)).toBeNaN()
  })
})
