/**
 * The `generate` stage and `pipeline generate`: greedy and seeded sampled continuations
 * equal `generate()` called directly, prompts come from the file or a dataset column,
 * the command prints what the stage writes, and the shared generation path reproduces
 * transformers' greedy tokens on the qwen2-tiny fixture.
 */
import type { Table } from "apache-arrow"
import { Effect } from "effect"
import { readFileSync, symlinkSync } from "node:fs"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { decodeIpc, rowAt } from "../src/arrow.ts"
import { ensureBackend } from "../src/backend/runtime.ts"
import type { BackendInfo } from "../src/backend/select.ts"
import { completePrompts } from "../src/eval/generation.ts"
import { loadInferenceModel } from "../src/eval/inference.ts"
import { generate, type GenerateOptions } from "../src/model/generate.ts"
import { loadHfFolder } from "../src/model/hf-folder.ts"
import { disposeModel, type Qwen2 } from "../src/model/qwen2.ts"
import type { Tokenizer } from "../src/tokenizer.ts"
import { writeTinyTokenizer } from "./support/tiny-tokenizer.ts"
import { writeTinyModel } from "./support/tiny-model.ts"
import { cliAsync, cliInProcess, runNode, runWithHub, SHARED, tempDir, writeFile } from "./helpers.ts"

// One wasm thread: test files run two at a time on two cores.
const saved = { backend: process.env.PIPELINE_BACKEND, threads: process.env.PIPELINE_THREADS }
process.env.PIPELINE_BACKEND = "wasm"
process.env.PIPELINE_THREADS = "1"

const PLAIN = { addSpecialTokens: false } as const
const JAMES = "James has 5 apples. He buys 3 times as many. Then gives half away. How many does he have?"
const QUESTIONS = ["Tom has 3 apples and buys 4 more. How many apples does he have?", "A box holds 6 eggs. How many eggs are in 2 boxes?", "Sue reads 5 pages a day. How many pages in 3 days?", "Ann has 9 pens and loses 2. How many are left?"]


interface StageJson {
  id: string
  status: string
  metrics: Record<string, number>
  outputs: { dataset?: { splits: Record<string, Array<{ path: string; rows: number }>> } } | null
}

const run = async (file: string, cache: string) => {
  const result = await cliInProcess(["run", file, "--cache-dir", cache, "--json"])
  expect(result.code, result.stderr).toBe(0)
  const stages = (JSON.parse(result.stdout) as { stages: Array<StageJson> }).stages
  return { ...result, byId: new Map(stages.map((s) => [s.id, s])) }
}

const generations = (stage: StageJson | undefined): Array<Record<string, unknown>> => {
  const table: Table = decodeIpc(readFileSync(stage!.outputs!.dataset!.splits.generations![0]!.path))
  return Array.from({ length: table.numRows }, (_, i) => rowAt(table, i))
}

describe("generate stage and command", () => {
  const dir = tempDir()
  const cache = tempDir()
  const modelDir = join(dir, "tiny-model")
  let tokenizer: Tokenizer
  let model: Qwen2
  /** generate() called directly, decoded as the stage decodes. */
  let direct: (prompts: ReadonlyArray<string>, options: Omit<GenerateOptions, "eosTokenIds" | "padTokenId">) => Array<{ text: string; tokens: number; reason: string }>

  beforeAll(async () => {
    await Effect.runPromise(ensureBackend)
    tokenizer = await writeTinyModel(modelDir, { seed: 3 })
    model = (await runNode(loadHfFolder(modelDir))).model
    direct = (prompts, options) => {
      const result = generate(model, prompts.map((p) => Array.from(tokenizer.encode(p, PLAIN))), {
        ...options,
        eosTokenIds: [tokenizer.eosTokenId!],
        padTokenId: tokenizer.padTokenId!
      })
      return result.tokens.map((ids, i) => ({ text: tokenizer.decode(ids, { skipSpecialTokens: true }), tokens: ids.length, reason: result.finishReasons[i]! }))
    }
    writeFile(dir, "questions.jsonl", QUESTIONS.map((question) => JSON.stringify({ question, answer: "#### 1" })).join("\n") + "\n")
  })
  afterAll(() => {
    disposeModel(model)
    for (const [key, value] of [["PIPELINE_BACKEND", saved.backend], ["PIPELINE_THREADS", saved.threads]] as const) {
      if (value === undefined) delete process.env[key]
      else process.env[key] = value
    }
  })

  it("generates greedy continuations of the file's prompts, as generate() does, and pipeline generate prints the same", async () => {
    const file = writeFile(dir, "greedy.yaml", `name: greedy
stages:
  answers:
    uses: generate
    with: { model: tiny-model, prompts: [${JSON.stringify(JAMES)}, "Tom has"], max_new_tokens: 16, batch_size: 2 }
`)
    const result = await run(file, cache)
    const stage = result.byId.get("answers")!
    const rows = generations(stage)
    const expected = [direct([JAMES], { maxNewTokens: 16 })[0]!, direct(["Tom has"], { maxNewTokens: 16 })[0]!]
    expect(rows).toEqual([
      { prompt: JAMES, generated: expected[0]!.text, finish_reason: expected[0]!.reason, new_tokens: expected[0]!.tokens },
      { prompt: "Tom has", generated: expected[1]!.text, finish_reason: expected[1]!.reason, new_tokens: expected[1]!.tokens }
    ])
    expect(stage.metrics.new_tokens).toBe(expected[0]!.tokens + expected[1]!.tokens)
    expect(stage.metrics.tokens_per_second).toBeGreaterThan(0)
    expect(result.stderr).toContain(`answers: prompt: ${JAMES}`)

    const command = await cliAsync(["generate", "--model", modelDir, "--prompt", JAMES, "--max-new-tokens", "16", "--backend", "wasm", "--threads", "1"])
    expect(command.code, command.stderr).toBe(0)
    expect(command.stdout).toBe(`${expected[0]!.text}\n`)
    expect(command.stderr).toContain("backend wasm (1 thread)")
    expect(command.stderr).toMatch(/\d+ tokens in [\d.]+s \([\d.]+ tokens\/s\), stopped by (eos|length)/)
  })

  it("samples a dataset column's first rows with a seed, as generate() does", async () => {
    const file = writeFile(dir, "sampled.yaml", `name: sampled
stages:
  data: { uses: fetch, with: { path: questions.jsonl } }
  answers:
    uses: generate
    needs: [data]
    with: { model: tiny-model, column: question, limit: 3, do_sample: true, temperature: 0.9, top_k: 20, seed: 5, max_new_tokens: 10, batch_size: 3 }
`)
    const rows = generations((await run(file, cache)).byId.get("answers"))
    const expected = direct(QUESTIONS.slice(0, 3), { maxNewTokens: 10, doSample: true, temperature: 0.9, topK: 20, seed: 5 })
    expect(rows.map((row) => row.prompt)).toEqual(QUESTIONS.slice(0, 3))
    expect(rows.map((row) => row.generated)).toEqual(expected.map((e) => e.text))
    const greedy = direct(QUESTIONS.slice(0, 3), { maxNewTokens: 10 })
    expect(rows.map((row) => row.generated)).not.toEqual(greedy.map((e) => e.text))
  })

  it("reproduces transformers' greedy tokens on qwen2-tiny through the shared generation path", async () => {
    const fixture = join(SHARED, "fixtures/qwen2-tiny")
    const golden = (JSON.parse(readFileSync(join(fixture, "golden.json"), "utf8")) as { greedy: { prompt_ids: Array<number>; max_new_tokens: number; new_token_ids: Array<number> } }).greedy
    // The fixture has no tokenizer: beside links to its files, a character tokenizer with
    // its vocabulary of 512 (EOS 0, <unk> 1, then one character per id).
    const folder = tempDir()
    for (const name of ["config.json", "generation_config.json", "model.safetensors"]) symlinkSync(join(fixture, name), join(folder, name))
    const alphabet = Array.from({ length: 510 }, (_, i) => String.fromCharCode(0x100 + i)).join("")
    await runNode(writeTinyTokenizer(folder, { alphabet }))
    const spell = (ids: ReadonlyArray<number>) => ids.map((id) => alphabet[id - 2]!).join("")
    const backend: BackendInfo = await Effect.runPromise(ensureBackend)
    const completion = await runWithHub(Effect.acquireUseRelease(
      loadInferenceModel(folder, backend),
      (loaded) => {
        expect(Array.from(loaded.tokenizer!.encode(spell(golden.prompt_ids), PLAIN))).toEqual(golden.prompt_ids)
        return completePrompts(loaded, [spell(golden.prompt_ids)], { maxNewTokens: golden.max_new_tokens, doSample: false, batchSize: 1 })
      },
      (loaded) => Effect.sync(() => disposeModel(loaded.model))
    ))
    expect(completion.completions[0]!.tokenIds).toEqual(golden.new_token_ids)
    expect(completion.completions[0]!.text).toBe(spell(golden.new_token_ids))
  })

  it("rejects prompts from two sources, naming the choices", async () => {
    const file = writeFile(dir, "bad.yaml", `name: bad
stages:
  answers:
    uses: generate
    with: { model: tiny-model, prompts: [hi], column: question }
`)
    const result = await cliInProcess(["run", file, "--cache-dir", cache])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain("give exactly one of prompts (a list), column (a dataset column) or template (columns in a pattern)")
  })
})
