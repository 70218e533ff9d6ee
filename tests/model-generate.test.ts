/**
 * Generation: the KV cache changes nothing but speed, left-padded and continuous batches
 * decode as their rows would alone, sampling is seeded, stopping works, and nothing leaks.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as tf from "@tensorflow/tfjs-core"
import { Effect } from "effect"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type BackendName, initBackend } from "../src/backend/select.ts"
import { generate, sampler } from "../src/model/generate.ts"
import { loadHfFolder } from "../src/model/hf-folder.ts"
import { lossAndGrads } from "../src/model/loss.ts"
import { disposeModel, forwardLogits, type Qwen2 } from "../src/model/qwen2.ts"

// One wasm thread: test files run two at a time on two cores, where a thread pool is
// oversubscribed and slower, not faster. backend-threads.test.ts tests the pool.
const THREADS = 1

const FIXTURE = path.resolve(__dirname, "../../shared/fixtures/qwen2-tiny")

const prompts = [
  [132, 417, 65, 45, 419],
  [7, 300],
  [500, 3, 19, 256, 88, 401, 2]
]

describe.each<BackendName>(["wasm", "cpu"])("generation on %s", (backend) => {
  let model: Qwen2
  beforeAll(async () => {
    await initBackend({ backend, threads: THREADS })
    model = (await Effect.runPromise(loadHfFolder(FIXTURE).pipe(Effect.provide(NodeContext.layer)))).model
  })
  afterAll(() => disposeModel(model))

  it("gives the same tokens with and without the KV cache, greedy and sampled", () => {
    for (const options of [
      { maxNewTokens: 12, eosTokenIds: [] },
      { maxNewTokens: 12, eosTokenIds: [], doSample: true, temperature: 0.8, topK: 40, topP: 0.9, seed: 7 }
    ]) {
      const cached = generate(model, prompts, options)
      expect(generate(model, prompts, { ...options, useCache: false })).toEqual(cached)
      expect(cached.tokens.every((row) => row.length === 12)).toBe(true)
    }
  })

  it("decodes a left-padded batch as each prompt alone", () => {
    const options = { maxNewTokens: 8, eosTokenIds: [] }
    const batched = generate(model, prompts, options).tokens
    prompts.forEach((prompt, row) => expect(batched[row]).toEqual(generate(model, [prompt], options).tokens[0]))
  })

  it("batches continuously: a row that ends gives its place to the next prompt, and every row gets what it gets alone", () => {
    const many = [...prompts, [9, 8, 7, 6, 5, 4, 3, 2, 1], [44], [123, 321, 231]]
    const free = many.map((prompt) => generate(model, [prompt], { maxNewTokens: 7, eosTokenIds: [] }).tokens[0] ?? [])
    // An EOS id that ends some rows early (at different steps) and not others.
    const eos = free[1]?.[1] ?? -1
    const alone = many.map((prompt) => generate(model, [prompt], { maxNewTokens: 7, eosTokenIds: [eos] }))
    expect(alone.some((one) => one.finishReasons[0] === "eos")).toBe(true)
    expect(alone.some((one) => one.finishReasons[0] === "length")).toBe(true)
    for (const useCache of [true, false]) {
      for (const batchSize of [1, 2, 4]) {
        const together = generate(model, many, { maxNewTokens: 7, eosTokenIds: [eos], batchSize, useCache })
        expect(together.tokens).toEqual(alone.map((one) => one.tokens[0]))
        expect(together.finishReasons).toEqual(alone.map((one) => one.finishReasons[0]))
      }
    }
  })

  it("samples each prompt from a stream of its own, whatever the batch", () => {
    const options = { maxNewTokens: 8, eosTokenIds: [], doSample: true, temperature: 1.3, topK: 0, seed: 11 }
    const all = generate(model, prompts, options).tokens
    expect(generate(model, prompts, { ...options, batchSize: 1 }).tokens).toEqual(all)
    expect(generate(model, [prompts[0]!, prompts[1]!], options).tokens).toEqual(all.slice(0, 2))
    // Two prompts alike draw differently: their streams are their own.
    const twins = generate(model, [prompts[2]!, prompts[2]!], { ...options, topK: 0, temperature: 3 }).tokens
    expect(twins[0]).not.toEqual(twins[1])
  })

  it("stops a row at an EOS id while the others go on", () => {
    const free = generate(model, prompts, { maxNewTokens: 6, eosTokenIds: [] }).tokens
    const eos = free[0]?.[2] ?? -1
    const stopped = generate(model, prompts, { maxNewTokens: 6, eosTokenIds: [eos] })
    expect(stopped.tokens[0]).toEqual(free[0]?.slice(0, 3))
    expect(stopped.finishReasons[0]).toBe("eos")
    // A row that never meets the EOS id runs to the limit, unchanged by the others stopping.
    prompts.forEach((_, row) => {
      if (!(free[row] ?? []).includes(eos)) {
        expect(stopped.tokens[row]).toEqual(free[row])
        expect(stopped.finishReasons[row]).toBe("length")
      }
    })
  })

  it("stops on a stop string of the decoded text", () => {
    const decode = (ids: ReadonlyArray<number>) => ids.map((id) => `<${id}>`).join("")
    const free = generate(model, [prompts[0] ?? []], { maxNewTokens: 10, eosTokenIds: [] }).tokens[0] ?? []
    const stop = `${free[3]}><${free[4]}`
    const result = generate(model, [prompts[0] ?? []], { maxNewTokens: 10, eosTokenIds: [], stopStrings: [stop], decode })
    expect(result.tokens[0]).toEqual(free.slice(0, 5))
    expect(result.finishReasons).toEqual(["stop_string"])
    expect(() => generate(model, prompts, { maxNewTokens: 1, stopStrings: ["x"] })).toThrow(/decode/)
  })

  it("samples deterministically for a seed, and differently for another", () => {
    const options = { maxNewTokens: 16, eosTokenIds: [], doSample: true, temperature: 1.5, topK: 0, topP: 1 }
    const first = generate(model, prompts, { ...options, seed: 1 })
    expect(generate(model, prompts, { ...options, seed: 1 })).toEqual(first)
    expect(generate(model, prompts, { ...options, seed: 2 }).tokens).not.toEqual(first.tokens)
  })

  it("keeps the tensor count flat over forward, backward and generation", () => {
    const batch = { batchSize: 1, seqLen: 5, inputIds: Int32Array.from(prompts[0] ?? []) }
    const labels = Int32Array.from(prompts[0] ?? [])
    const cycle = () => {
      forwardLogits(model, batch).dispose()
      lossAndGrads(model, batch, labels).grads.forEach((grad) => grad.dispose())
      generate(model, prompts, { maxNewTokens: 3, eosTokenIds: [] })
      generate(model, prompts, { maxNewTokens: 3, eosTokenIds: [], useCache: false })
      generate(model, [...prompts, [5], [6, 7]], { maxNewTokens: 4, eosTokenIds: [prompts[0]![0]!], batchSize: 2 })
    }
    cycle()
    const before = tf.memory().numTensors
    for (let i = 0; i < 3; i++) cycle()
    expect(tf.memory().numTensors).toBe(before)
  })
})

describe("sampler", () => {
  it("keeps only the top-k tokens", () => {
    const choose = sampler({ topK: 2, seed: 3 })
    const logits = Float32Array.from([0, 5, 1, 4.9, -2])
    const seen = new Set(Array.from({ length: 200 }, () => choose(logits)))
    expect([...seen].sort()).toEqual([1, 3])
  })

  it("keeps every token tied with the k-th", () => {
    const choose = sampler({ topK: 1, seed: 4 })
    const logits = Float32Array.from([5, 1, 5, 2])
    const seen = new Set(Array.from({ length: 200 }, () => choose(logits)))
    expect([...seen].sort()).toEqual([0, 2])
  })

  it("keeps the smallest head reaching top-p", () => {
    // Probabilities about 0.64, 0.24, 0.09, 0.03: top-p 0.8 keeps the first two.
    const choose = sampler({ topK: 0, topP: 0.8, seed: 5 })
    const logits = Float32Array.from([3, 2, 1, 0])
    const seen = new Set(Array.from({ length: 300 }, () => choose(logits)))
    expect([...seen].sort()).toEqual([0, 1])
  })

  it("follows the softmax at temperature 1", () => {
    const choose = sampler({ topK: 0, seed: 11 })
    const logits = Float32Array.from([Math.log(3), 0])
    const draws = Array.from({ length: 4000 }, () => choose(logits))
    expect(draws.filter((token) => token === 0).length / draws.length).toBeCloseTo(0.75, 1)
  })
})
