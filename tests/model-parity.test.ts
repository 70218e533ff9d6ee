/**
 * Parity with Hugging Face transformers (v4.44, float32, CPU) on the qwen2-tiny fixture,
 * on every backend this machine has: logits, loss, per-parameter gradient norms, and
 * greedy decoding with and without the KV cache. Tolerances are the fixture's own.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as tf from "@tensorflow/tfjs-core"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type BackendName, initBackend } from "../src/backend/select.ts"
import { generate } from "../src/model/generate.ts"
import { loadHfFolder } from "../src/model/hf-folder.ts"
import { lossAndGrads } from "../src/model/loss.ts"
import { decode, disposeModel, finalNorm, forwardLogits, lmHead, type Qwen2, type TokenBatch } from "../src/model/qwen2.ts"

// One wasm thread: test files run two at a time on two cores, where a thread pool is
// oversubscribed and slower, not faster. backend-threads.test.ts tests the pool.
const THREADS = 1

const FIXTURE = path.resolve(__dirname, "../../shared/fixtures/qwen2-tiny")

interface Golden {
  about: { suggested_tolerance: { logits_abs: number; loss_abs: number; grad_norm_rel: number } }
  batch: { input_ids: Array<Array<number>>; attention_mask: Array<Array<number>>; labels: Array<Array<number>>; lengths: Array<number> }
  forward: {
    logits_seq0: Array<Array<number>>
    logits_seq1_valid: Array<Array<number>>
    argmax_seq0: Array<number>
    loss: number
    hidden_states_stats: Array<{ index: number; seq0_valid: { sum: number; l2: number }; seq1_valid: { sum: number; l2: number } }>
  }
  gradients: { global_l2_norm: number; per_parameter_l2_norm: Record<string, number> }
  greedy: {
    prompt_ids: Array<number>
    max_new_tokens: number
    new_token_ids: Array<number>
    per_step_top3_no_cache: Array<{ token: number; top3_ids: Array<number>; top3_logits: Array<number> }>
  }
}

const golden = JSON.parse(readFileSync(path.join(FIXTURE, "golden.json"), "utf8")) as Golden
const tolerance = golden.about.suggested_tolerance

const batch: TokenBatch = {
  batchSize: golden.batch.input_ids.length,
  seqLen: golden.batch.input_ids[0]?.length ?? 0,
  inputIds: Int32Array.from(golden.batch.input_ids.flat()),
  attentionMask: Int32Array.from(golden.batch.attention_mask.flat())
}
const labels = Int32Array.from(golden.batch.labels.flat())

/** Float64 accumulation, as the fixture's norms were computed. */
const l2 = (values: ArrayLike<number>): number => {
  let sum = 0
  for (let i = 0; i < values.length; i++) sum += (values[i] ?? 0) ** 2
  return Math.sqrt(sum)
}

const maxAbsDiff = (expected: ReadonlyArray<ReadonlyArray<number>>, actual: ReadonlyArray<ReadonlyArray<number>>): number => {
  expect(actual.length).toBe(expected.length)
  let worst = 0
  expected.forEach((row, i) => row.forEach((value, j) => (worst = Math.max(worst, Math.abs(value - (actual[i]?.[j] ?? NaN))))))
  return Number.isNaN(worst) ? Infinity : worst
}

const tensorflowLoads = await initBackend({ backend: "tensorflow" }).then(
  () => true,
  () => false
)
const backends: ReadonlyArray<BackendName> = tensorflowLoads ? ["tensorflow", "wasm", "cpu"] : ["wasm", "cpu"]

describe.each(backends)("qwen2-tiny parity on %s", (backend) => {
  let model: Qwen2

  beforeAll(async () => {
    await initBackend({ backend, threads: THREADS })
    model = (await Effect.runPromise(loadHfFolder(FIXTURE).pipe(Effect.provide(NodeContext.layer)))).model
  })
  afterAll(() => disposeModel(model))

  it("logits match transformers", () => {
    const logits = forwardLogits(model, batch)
    const [seq0, seq1] = logits.arraySync()
    logits.dispose()
    const valid1 = golden.batch.lengths[1] ?? 0
    expect(maxAbsDiff(golden.forward.logits_seq0, seq0 ?? [])).toBeLessThan(tolerance.logits_abs)
    expect(maxAbsDiff(golden.forward.logits_seq1_valid, (seq1 ?? []).slice(0, valid1))).toBeLessThan(tolerance.logits_abs)
    expect((seq0 ?? []).map((row) => row.indexOf(Math.max(...row)))).toEqual(golden.forward.argmax_seq0)
  })

  it("hidden states after each layer match transformers", () => {
    const stats = tf.tidy(() => {
      const { hidden, layerOutputs } = decode(model, batch, { layerOutputs: true })
      // transformers reports the last hidden state after the final norm.
      const stages = [...layerOutputs.slice(0, -1), finalNorm(model, hidden)]
      return stages.map((stage) => stage.arraySync())
    })
    golden.forward.hidden_states_stats.forEach(({ index, seq0_valid, seq1_valid }) => {
      const rows = stats[index] ?? []
      const seq0 = rows.slice(0, batch.seqLen).flat()
      const seq1 = rows.slice(batch.seqLen, batch.seqLen + (golden.batch.lengths[1] ?? 0)).flat()
      expect(l2(seq0)).toBeCloseTo(seq0_valid.l2, 4)
      expect(l2(seq1)).toBeCloseTo(seq1_valid.l2, 4)
    })
  })

  it("loss and per-parameter gradient norms match transformers", () => {
    const { loss, tokens, grads } = lossAndGrads(model, batch, labels)
    expect(tokens).toBe(12)
    expect(Math.abs(loss - golden.forward.loss)).toBeLessThan(tolerance.loss_abs)
    const expected = golden.gradients.per_parameter_l2_norm
    expect([...grads.keys()].sort()).toEqual(Object.keys(expected).sort())
    let squares = 0
    for (const [name, grad] of grads) {
      const norm = l2(grad.dataSync())
      squares += norm ** 2
      const reference = expected[name] ?? NaN
      expect(Math.abs(norm - reference) / reference, name).toBeLessThan(tolerance.grad_norm_rel)
      grad.dispose()
    }
    const global = golden.gradients.global_l2_norm
    expect(Math.abs(Math.sqrt(squares) - global) / global).toBeLessThan(tolerance.grad_norm_rel)
  })

  it("greedy decoding gives transformers' tokens, with and without the KV cache", () => {
    const prompt = [golden.greedy.prompt_ids]
    const options = { maxNewTokens: golden.greedy.max_new_tokens, eosTokenIds: [] }
    expect(generate(model, prompt, options).tokens[0]).toEqual(golden.greedy.new_token_ids)
    expect(generate(model, prompt, { ...options, useCache: false }).tokens[0]).toEqual(golden.greedy.new_token_ids)
  })

  it("each uncached step has transformers' top-3 tokens and logits", () => {
    const tokens = [...golden.greedy.prompt_ids]
    for (const step of golden.greedy.per_step_top3_no_cache) {
      const row = tf.tidy(() => {
        const { hidden } = decode(model, { batchSize: 1, seqLen: tokens.length, inputIds: Int32Array.from(tokens) })
        const last = tf.slice(hidden, [tokens.length - 1, 0], [1, -1])
        return lmHead(model, finalNorm(model, last)).dataSync()
      })
      const top3 = Array.from(row.keys()).sort((a, b) => (row[b] ?? 0) - (row[a] ?? 0)).slice(0, 3)
      expect(top3).toEqual(step.top3_ids)
      step.top3_logits.forEach((logit, i) => expect(Math.abs((row[top3[i] ?? 0] ?? NaN) - logit)).toBeLessThan(tolerance.logits_abs))
      tokens.push(step.token)
    }
  })
})
