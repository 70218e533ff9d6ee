/**
 * The `evaluate` stage on a tiny random Qwen2 with a character tokenizer saved beside
 * it: eval_loss against an independent computation (the loss of each batch, weighted by
 * its size), accuracy against greedy generation run directly, the cache, and the
 * before/after comparison with the lead's train stage.
 */
import * as tf from "@tensorflow/tfjs-core"
import type { Table, Vector } from "apache-arrow"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { decodeIpc, rowAt } from "../src/arrow.ts"
import { ensureBackend } from "../src/backend/runtime.ts"
import { generate } from "../src/model/generate.ts"
import { loadHfFolder } from "../src/model/hf-folder.ts"
import { causalLmLoss } from "../src/model/loss.ts"
import { disposeModel, type Qwen2 } from "../src/model/qwen2.ts"
import type { Tokenizer } from "../src/tokenizer.ts"
import { writeTinyModel } from "./support/tiny-model.ts"
import { cliAsync, cliInProcess, runNode, tempDir, writeFile } from "./helpers.ts"

// One wasm thread: test files run two at a time on two cores.
const saved = { backend: process.env.PIPELINE_BACKEND, threads: process.env.PIPELINE_THREADS }
process.env.PIPELINE_BACKEND = "wasm"
process.env.PIPELINE_THREADS = "1"

const PLAIN = { addSpecialTokens: false } as const


/** GSM8K-style rows: a question, and a worked answer ending in `#### N`. */
const problems = (count: number) =>
  Array.from({ length: count }, (_, i) => {
    const [a, b] = [i + 2, (i * 3) % 7 + 1]
    return { question: `Tom has ${a} apples and buys ${b} more. How many apples does he have?`, answer: `He has ${a} + ${b} = <<${a}+${b}=${a + b}>>${a + b} apples.\n#### ${a + b}` }
  })

interface StageJson {
  id: string
  status: string
  reason: string
  metrics: Record<string, number>
  outputs: { dataset?: { splits: Record<string, Array<{ path: string; rows: number }>> } } | null
}

const run = async (file: string, cache: string, ...args: Array<string>) => {
  const result = await cliInProcess(["run", file, "--cache-dir", cache, "--json", ...args])
  expect(result.code, result.stderr).toBe(0)
  const stages = (JSON.parse(result.stdout) as { stages: Array<StageJson> }).stages
  return { ...result, byId: new Map(stages.map((s) => [s.id, s])), status: Object.fromEntries(stages.map((s) => [s.id, s.status])) }
}

const split = (stage: StageJson | undefined, name: string): Table => decodeIpc(readFileSync(stage!.outputs!.dataset!.splits[name]![0]!.path))
const rows = (table: Table) => Array.from({ length: table.numRows }, (_, i) => rowAt(table, i))

/** eval_loss computed here: right-pad each batch, the loss per batch, weighted by batch size. */
const independentEvalLoss = (model: Qwen2, table: Table, batchSize: number, padId: number) => {
  const ids = table.getChild("input_ids")!
  const labels = table.getChild("labels")!
  const examples = Array.from({ length: table.numRows }, (_, i) => ({
    ids: Array.from((ids.get(i) as Vector).toArray() as Int32Array),
    labels: Array.from((labels.get(i) as Vector).toArray() as Int32Array)
  }))
  let weighted = 0
  const batchLosses: Array<number> = []
  for (let start = 0; start < examples.length; start += batchSize) {
    const batch = examples.slice(start, start + batchSize)
    const width = Math.max(...batch.map((e) => e.ids.length))
    const pad = (row: Array<number>, value: number) => [...row, ...Array<number>(width - row.length).fill(value)]
    const loss = tf.tidy(() =>
      causalLmLoss(model, {
        batchSize: batch.length,
        seqLen: width,
        inputIds: Int32Array.from(batch.flatMap((e) => pad(e.ids, padId))),
        attentionMask: Int32Array.from(batch.flatMap((e) => pad(e.ids.map(() => 1), 0)))
      }, Int32Array.from(batch.flatMap((e) => pad(e.labels, -100)))).dataSync()[0]!
    )
    batchLosses.push(loss)
    weighted += loss * batch.length
  }
  return { evalLoss: weighted / examples.length, batchLosses }
}

const modelAt = (dir: string) => runNode(loadHfFolder(dir)).then((loaded) => loaded.model)

describe("evaluate stage", () => {
  const dir = tempDir()
  const cache = tempDir()
  let tokenizer: Tokenizer
  beforeAll(async () => {
    await Effect.runPromise(ensureBackend)
    tokenizer = await writeTinyModel(join(dir, "tiny-model"), { seed: 1 })
    await writeTinyModel(join(dir, "other-model"), { seed: 2 })
    writeFile(dir, "problems.jsonl", problems(10).map((row) => JSON.stringify(row)).join("\n") + "\n")
  })
  afterAll(() => {
    for (const [key, value] of [["PIPELINE_BACKEND", saved.backend], ["PIPELINE_THREADS", saved.threads]] as const) {
      if (value === undefined) delete process.env[key]
      else process.env[key] = value
    }
  })

  const pipeline = (stages: string) =>
    writeFile(dir, "p.yaml", `name: evaluate-test
stages:
  data: { uses: fetch, with: { path: problems.jsonl, split: test } }
  tokenized:
    uses: tokenize
    needs: [data]
    with: { tokenizer: tiny-model, prompt: question, completion: answer, keep: [question, answer] }
${stages}`)

  it("reports eval_loss as trainer.evaluate() does, perplexity, and accuracy from greedy answers; cached; --set re-runs only it", async () => {
    const file = pipeline(`  evaluate:
    uses: evaluate
    needs: [tokenized]
    with: { model: tiny-model, eval_batch_size: 3, limit: 4, max_new_tokens: 12 }
`)
    const first = await run(file, cache)
    expect(first.status).toEqual({ data: "ran", tokenized: "ran", evaluate: "ran" })
    const stage = first.byId.get("evaluate")!
    const { eval_loss, perplexity, accuracy } = stage.metrics
    expect(Object.keys(stage.metrics).sort()).toEqual(["accuracy", "eval_loss", "perplexity"])
    expect(perplexity).toBeCloseTo(Math.exp(eval_loss!), 10)
    expect(accuracy).toBeGreaterThanOrEqual(0)
    expect(accuracy).toBeLessThanOrEqual(1)
    expect(first.stderr).toContain("evaluate: backend wasm (1 thread)")

    // eval_loss: 10 examples in batches of 3, 3, 3 and 1, each batch's loss weighted by its size.
    const model = await modelAt(join(dir, "tiny-model"))
    try {
      const tokenized = split(first.byId.get("tokenized"), "test")
      const expected = independentEvalLoss(model, tokenized, 3, tokenizer.padTokenId!)
      expect(eval_loss).toBeCloseTo(expected.evalLoss, 5)
      // The weighting matters: a plain mean of the four batch losses is another number.
      const unweighted = expected.batchLosses.reduce((a, b) => a + b, 0) / expected.batchLosses.length
      expect(Math.abs(unweighted - expected.evalLoss)).toBeGreaterThan(1e-6)

      const examples = rows(split(stage, "examples"))
      expect(examples).toHaveLength(4)
      const questions = problems(4)
      examples.forEach((row, i) => {
        expect(row.question).toBe(questions[i]!.question)
        expect(row.reference).toBe(questions[i]!.answer)
        expect(row.expected).toBe(questions[i]!.answer.split("#### ")[1])
        expect(row.correct).toBe(row.predicted !== null && row.predicted === row.expected)
      })
      // The predictions are greedy continuations, EOS-stopped, of the question alone.
      const direct = generate(model, [Array.from(tokenizer.encode(questions[1]!.question, PLAIN))], {
        maxNewTokens: 12,
        eosTokenIds: [tokenizer.eosTokenId!],
        padTokenId: tokenizer.padTokenId!
      })
      expect(examples[1]!.prediction).toBe(tokenizer.decode(direct.tokens[0]!, { skipSpecialTokens: true }))
      expect(accuracy).toBe(examples.filter((row) => row.correct).length / 4)

      const summary = rows(split(stage, "summary"))
      expect(summary).toEqual([{ model: "tiny-model", eval_loss, perplexity, accuracy }])
    } finally {
      disposeModel(model)
    }

    const second = await run(file, cache)
    expect(second.status).toEqual({ data: "cached", tokenized: "cached", evaluate: "cached" })

    const third = await run(file, cache, "--set", "evaluate.limit=3")
    expect(third.status).toEqual({ data: "cached", tokenized: "cached", evaluate: "ran" })
    expect(split(third.byId.get("evaluate"), "examples").numRows).toBe(3)
    expect(third.byId.get("evaluate")!.metrics.eval_loss).toBe(eval_loss)
  })

  it("evaluates a trained model beside the base model it started from (compare_base), or a given base_model", async () => {
    const file = pipeline(`  train:
    uses: train
    needs: [tokenized]
    with: { model: tiny-model, split: test, max_steps: 2, batch_size: 4, learning_rate: 1.0e-2, save_steps: 100, logging_steps: 1 }
  after:
    uses: evaluate
    needs: [tokenized, train]
    with: { compare_base: true, eval_batch_size: 4, limit: 2, max_new_tokens: 8 }
  versus:
    uses: evaluate
    needs: [tokenized]
    with: { model: tiny-model, base_model: other-model, metrics: [loss, accuracy], eval_batch_size: 4, limit: 2, max_new_tokens: 8 }
  plain:
    uses: evaluate
    needs: [tokenized]
    with: { model: tiny-model, metrics: [loss], eval_batch_size: 4 }
`)
    const result = await run(file, cache)
    const after = result.byId.get("after")!
    const versus = result.byId.get("versus")!
    const plain = result.byId.get("plain")!
    expect(Object.keys(after.metrics).sort()).toEqual(["accuracy", "base_accuracy", "base_eval_loss", "base_perplexity", "eval_loss", "perplexity"])
    // The base is the train stage's `model:`, evaluated on the same batches as `plain` evaluates it.
    expect(after.metrics.base_eval_loss).toBeCloseTo(plain.metrics.eval_loss!, 6)
    expect(after.metrics.eval_loss).not.toBeCloseTo(plain.metrics.eval_loss!, 4)
    expect(rows(split(after, "summary")).map((row) => row.model)).toEqual(["train", "tiny-model (base)"])
    const sideBySide = split(after, "examples")
    expect(sideBySide.schema.fields.map((f) => f.name)).toEqual(["question", "reference", "prediction", "predicted", "expected", "correct", "base_prediction", "base_predicted", "base_correct"])
    expect(sideBySide.numRows).toBe(2)

    expect(Object.keys(versus.metrics).sort()).toEqual(["accuracy", "base_accuracy", "base_eval_loss", "eval_loss"])
    expect(versus.metrics.eval_loss).toBe(plain.metrics.eval_loss)
    expect(rows(split(versus, "summary"))[1]).toMatchObject({ model: "other-model (base)", perplexity: null })

    expect(Object.keys(plain.metrics)).toEqual(["eval_loss"])
    expect(Object.keys(plain.outputs!.dataset!.splits)).toEqual(["summary"])
  })

  it("runs on the backend --backend and --threads choose, to the same loss", async () => {
    const file = pipeline(`  evaluate:
    uses: evaluate
    needs: [tokenized]
    with: { model: tiny-model, metrics: [loss], eval_batch_size: 3 }
`)
    const onWasm = await run(file, cache)
    const onCpu = await cliAsync(["run", file, "--cache-dir", tempDir(), "--json", "--backend", "cpu", "--threads", "1"])
    expect(onCpu.code, onCpu.stderr).toBe(0)
    expect(onCpu.stderr).toContain("evaluate: backend cpu")
    const stage = (JSON.parse(onCpu.stdout) as { stages: Array<StageJson> }).stages.find((s) => s.id === "evaluate")!
    expect(stage.metrics.eval_loss).toBeCloseTo(onWasm.byId.get("evaluate")!.metrics.eval_loss!, 5)
  })

  it("says what is wrong: a missing prompt column, no base model to compare with", async () => {
    const missing = await cliInProcess(["run", pipeline(`  evaluate:
    uses: evaluate
    needs: [tokenized]
    with: { model: tiny-model, prompt: problem, metrics: [accuracy] }
`), "--cache-dir", cache])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain(`split "test" has no column "problem" (columns: input_ids, labels, length, question, answer)`)

    const scratch = await cliInProcess(["run", pipeline(`  train:
    uses: train
    needs: [tokenized]
    with:
      init: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 }
      tokenizer: tiny-model
      split: test
      max_steps: 1
  evaluate:
    uses: evaluate
    needs: [tokenized, train]
    with: { compare_base: true, metrics: [loss] }
`), "--cache-dir", cache, "--json"])
    // From scratch, the base is the untrained model the run started from.
    expect(scratch.code, scratch.stderr).toBe(0)
    const evaluate = (JSON.parse(scratch.stdout).stages as Array<{ id: string; metrics: Record<string, number> }>).find((s) => s.id === "evaluate")!
    expect(evaluate.metrics.base_eval_loss).toBeGreaterThan(evaluate.metrics.eval_loss!)
  })
})
