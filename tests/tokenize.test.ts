/**
 * The `tokenize` stage through the CLI, in process: the tutorial's masking on its own
 * example, GSM8K test end to end with the ≤512 filter and the cache, prompt templates,
 * chat templates, continued pre-training with packing, and each error's message.
 */
import type { Table } from "apache-arrow"
import { readFileSync, writeFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { describe, expect, it } from "vitest"
import { decodeIpc, rowAt } from "../src/arrow.ts"
import { loadTokenizer, type Tokenizer } from "../src/tokenizer.ts"
import { qwenTokenizerDir } from "./fixtures/tokenizers/folders.ts"
import { cliInProcess, GSM8K_TEST, runNode, tempDir, writeFile } from "./helpers.ts"

const GSM8K_TRAIN = resolve(__dirname, "../../shared/data/gsm8k/train.jsonl")
const EOS = 151643
const PLAIN = { addSpecialTokens: false } as const

interface StageJson {
  id: string
  status: string
  reason: string
  outputs: { dataset?: { splits: Record<string, Array<{ path: string; rows: number }>> } } | null
}

const run = async (file: string, cache: string) => {
  const result = await cliInProcess(["run", file, "--cache-dir", cache, "--json"])
  const stages = (JSON.parse(result.stdout) as { stages: Array<StageJson> }).stages
  return { ...result, stages, status: Object.fromEntries(stages.map((s) => [s.id, s.status])) }
}

/** The single file of `split` that stage `id` wrote. */
const output = (stages: ReadonlyArray<StageJson>, id: string, split = "train"): Table => {
  const files = stages.find((s) => s.id === id)!.outputs!.dataset!.splits[split]!
  expect(files).toHaveLength(1)
  return decodeIpc(readFileSync(files[0]!.path))
}

const rows = (table: Table) => Array.from({ length: table.numRows }, (_, i) => rowAt(table, i)) as Array<Record<string, unknown>>

const jsonl = (file: string, count: number) =>
  readFileSync(file, "utf8").split("\n").slice(0, count).map((line) => JSON.parse(line) as { question: string; answer: string })

/**
 * Tokenizer folders the tests only read, shared so that each is parsed once in this
 * process: the stage keeps loaded tokenizers per folder.
 */
const QWEN = qwenTokenizerDir("qwen2.5")
const CHAT = qwenTokenizerDir("chatml")

/** A pipeline folder whose pipeline starts with a `data` stage. */
const project = (data: string) => {
  const dir = tempDir()
  const pipeline = (stages: string) =>
    writeFile(dir, "p.yaml", `name: t\nstages:\n  data:\n    uses: fetch\n    with: { path: ${JSON.stringify(data)} }\n${stages}`)
  return { dir, cache: tempDir(), pipeline }
}

const tokenize = (id: string, params: string) => `  ${id}:\n    uses: tokenize\n    needs: [data]\n    with: ${params}\n`

const ids = (tokenizer: Tokenizer, text: string) => Array.from(tokenizer.encode(text, PLAIN))

const qwenTokenizer = () => runNode(loadTokenizer(QWEN))

describe("tokenize stage", () => {
  it("masks the question of the tutorial's own example: -100 over its tokens, then the answer's ids and EOS", async () => {
    const dir = tempDir()
    const first = readFileSync(GSM8K_TRAIN, "utf8").split("\n")[0]!
    const data = writeFile(dir, "train.jsonl", first + "\n")
    const { cache, pipeline } = project(data)
    const file = pipeline(tokenize("tokens", `{ tokenizer: ${QWEN}, prompt: question, completion: answer }`))
    const result = await run(file, cache)
    expect(result.code).toBe(0)
    const table = output(result.stages, "tokens")
    expect(table.schema.fields.map((f) => `${f.name}: ${f.type}`)).toEqual(["input_ids: List<Int32>", "labels: List<Int32>", "length: Int32"])

    const { question, answer } = JSON.parse(first) as { question: string; answer: string }
    const tokenizer = await qwenTokenizer()
    const questionIds = ids(tokenizer, question)
    const answerIds = ids(tokenizer, answer)
    expect(tokenizer.decode(questionIds)).toBe(question)
    expect(tokenizer.decode(answerIds)).toBe(answer)
    const row = rowAt(table, 0)
    expect(row.input_ids).toEqual([...questionIds, ...answerIds, EOS])
    expect(row.labels).toEqual([...questionIds.map(() => -100), ...answerIds, EOS])
    expect(row.length).toBe(questionIds.length + answerIds.length + 1)
    // The question's last token is masked and the answer's first is not: the mask ends exactly at the boundary.
    expect((row.labels as Array<number>).indexOf(answerIds[0]!)).toBe(questionIds.length)
  })

  it("tokenizes GSM8K test, filters it to ≤512 tokens, caches it, and re-runs when a tokenizer file changes", async () => {
    const { dir, cache, pipeline } = project(GSM8K_TEST)
    // A folder of this test's own, beside the pipeline file, since the test edits it.
    qwenTokenizerDir("qwen2.5", dir, "qwen")
    const file = pipeline(
      tokenize("tokens", "{ tokenizer: qwen, prompt: question, completion: answer, keep: [answer], batch_size: 100 }") +
        "  short:\n    uses: filter\n    needs: [tokens]\n    with: { max_length: { column: input_ids, max: 512 } }\n"
    )
    const first = await run(file, cache)
    expect(first.code).toBe(0)
    expect(first.status).toEqual({ data: "ran", tokens: "ran", short: "ran" })
    expect(first.stderr).toMatch(/tokens: train: 1319 rows, \d+ tokens \(max \d+, mean \d+\.\d\)/)
    const table = output(first.stages, "tokens")
    expect(table.numRows).toBe(1319)
    expect(table.batches.length).toBeGreaterThan(0)
    const source = jsonl(GSM8K_TEST, 1319)
    const tokenized = rows(table)
    // keep carries the answer through, in order, across the 100-row batches.
    expect(tokenized.map((r) => r.answer)).toEqual(source.map((r) => r.answer))
    expect(tokenized.every((r) => (r.input_ids as Array<number>).length === r.length && (r.labels as Array<number>).length === r.length)).toBe(true)
    const longest = Math.max(...tokenized.map((r) => r.length as number))
    const within = tokenized.filter((r) => (r.length as number) <= 512).length
    expect(first.stderr).toContain(`max ${longest},`)
    expect(output(first.stages, "short").numRows).toBe(within)
    expect(first.stderr).toContain(`short: train: 1319 → ${within} rows`)

    const second = await run(file, cache)
    expect(second.status).toEqual({ data: "cached", tokens: "cached", short: "cached" })

    const config = join(dir, "qwen", "tokenizer_config.json")
    writeFileSync(config, readFileSync(config, "utf8").replace("\"model_max_length\": 131072", "\"model_max_length\": 32768"))
    const third = await run(file, cache)
    expect(third.status.data).toBe("cached")
    expect(third.status.tokens).toBe("ran")
    expect(third.stages.find((s) => s.id === "tokens")!.reason).toBe("file `qwen/tokenizer_config.json` changed")
  })

  it("gives the same ids on worker threads as in one thread, and does not re-run when only the workers change", async () => {
    const { cache, pipeline } = project(GSM8K_TEST)
    const file = pipeline(
      tokenize("pooled", `{ tokenizer: ${QWEN}, prompt: question, completion: answer, batch_size: 200, workers: 3 }`) +
        tokenize("single", `{ tokenizer: ${QWEN}, prompt: question, completion: answer, batch_size: 200, workers: 1 }`)
    )
    // The two share a fingerprint (workers is not fingerprinted), so one run makes one of
    // them and the other reuses it: each is made in a cache of its own here.
    const runUntil = async (stage: string, into: string) => {
      const result = await cliInProcess(["run", file, "--cache-dir", into, "--json", "--until", stage])
      return { ...result, stages: (JSON.parse(result.stdout) as { stages: Array<StageJson> }).stages }
    }
    const first = await runUntil("pooled", cache)
    expect(first.code, first.stderr).toBe(0)
    expect(first.stderr).toContain("pooled: tokenizing on this thread and 2 workers")
    const alone = await runUntil("single", tempDir())
    expect(alone.code, alone.stderr).toBe(0)
    expect(alone.stderr).not.toContain("single: tokenizing on")
    const pooled = output(first.stages, "pooled")
    expect(pooled.numRows).toBe(1319)
    expect(pooled.batches).toHaveLength(7) // the batches stay in order, 200 rows each
    expect(rows(pooled)).toEqual(rows(output(alone.stages, "single")))
    const again = await cliInProcess(["run", file, "--cache-dir", cache, "--json", "--set", "pooled.workers=1", "--set", "single.workers=2"])
    expect(JSON.parse(again.stdout).stages.map((s: StageJson) => s.status)).toEqual(["cached", "cached", "cached"])
  })

  it("builds prompts from a template, renders chat templates, and leaves labels unmasked when asked", async () => {
    const data = writeFile(tempDir(), "few.jsonl", readFileSync(GSM8K_TEST, "utf8").split("\n").slice(0, 20).join("\n") + "\n")
    const { cache, pipeline } = project(data)
    const file = pipeline(
      tokenize("templated", `{ tokenizer: ${QWEN}, template: "Question: {question}\\nAnswer ({{worked}}): ", completion: answer }`) +
        tokenize("chat", `{ tokenizer: ${CHAT}, prompt: question, completion: answer, chat_template: true, keep: [question] }`) +
        tokenize("unmasked", `{ tokenizer: ${QWEN}, prompt: question, completion: answer, mask_prompt: false, append_eos: false }`)
    )
    const result = await run(file, cache)
    expect(result.code).toBe(0)
    const tokenizer = await qwenTokenizer()
    const [{ question, answer }] = jsonl(GSM8K_TEST, 1) as [{ question: string; answer: string }]
    const answerIds = ids(tokenizer, answer)

    const templated = rowAt(output(result.stages, "templated"), 0)
    const promptIds = ids(tokenizer, `Question: ${question}\nAnswer ({worked}): `)
    expect(templated.input_ids).toEqual([...promptIds, ...answerIds, EOS])
    expect(templated.labels).toEqual([...promptIds.map(() => -100), ...answerIds, EOS])

    // The ChatML fixture: the user turn and the generation prompt are masked; the reply and its turn end are learned; no EOS added.
    const chatTable = output(result.stages, "chat")
    expect(chatTable.schema.fields.map((f) => f.name)).toEqual(["input_ids", "labels", "length", "question"])
    const chat = rowAt(chatTable, 0)
    const headIds = ids(tokenizer, `<|im_start|>user\n${question}<|im_end|>\n<|im_start|>assistant\n`)
    const replyIds = ids(tokenizer, `${answer}<|im_end|>\n`)
    expect(headIds[0]).toBe(151644)
    expect(replyIds.slice(-2)).toEqual([151645, 198])
    expect(chat.input_ids).toEqual([...headIds, ...replyIds])
    expect(chat.labels).toEqual([...headIds.map(() => -100), ...replyIds])
    expect(chat.question).toBe(question)

    const unmasked = rowAt(output(result.stages, "unmasked"), 0)
    expect(unmasked.input_ids).toEqual([...ids(tokenizer, question), ...answerIds])
    expect(unmasked.labels).toEqual(unmasked.input_ids)
  })

  it("tokenizes plain text for continued pre-training, whole or packed into blocks with EOS between documents", async () => {
    const dir = tempDir()
    const documents = jsonl(GSM8K_TEST, 6).map((r) => r.answer)
    const data = writeFile(dir, "docs.jsonl", documents.map((text) => JSON.stringify({ text })).join("\n") + "\n")
    const { cache, pipeline } = project(data)
    const file = pipeline(
      tokenize("docs", `{ tokenizer: ${QWEN}, text: text, keep: [text] }`) +
        tokenize("packed", `{ tokenizer: ${QWEN}, text: text, pack: { block_size: 64 } }`)
    )
    const result = await run(file, cache)
    expect(result.code).toBe(0)
    const tokenizer = await qwenTokenizer()
    const perDocument = documents.map((text) => [...ids(tokenizer, text), EOS])

    const whole = rows(output(result.stages, "docs"))
    expect(whole.map((r) => r.input_ids)).toEqual(perDocument)
    expect(whole.map((r) => r.labels)).toEqual(perDocument)
    expect(whole.map((r) => r.text)).toEqual(documents)

    const stream = perDocument.flat()
    const blockCount = Math.floor(stream.length / 64)
    expect(blockCount).toBeGreaterThan(2)
    const blocks = rows(output(result.stages, "packed"))
    expect(blocks.map((b) => b.length)).toEqual(Array(blockCount).fill(64))
    expect(blocks.map((b) => b.input_ids)).toEqual(Array.from({ length: blockCount }, (_, i) => stream.slice(i * 64, (i + 1) * 64)))
    expect(blocks.every((b) => JSON.stringify(b.labels) === JSON.stringify(b.input_ids))).toBe(true)
    // Each document ends with EOS where it ended in the stream: the separators survive the cut.
    const separators = blocks.flatMap((b, i) => (b.input_ids as Array<number>).flatMap((id, j) => (id === EOS ? [i * 64 + j] : [])))
    const ends = perDocument.map((_, d) => perDocument.slice(0, d + 1).flat().length - 1).filter((end) => end < blockCount * 64)
    expect(separators).toEqual(ends)
    expect(result.stderr).toContain(`packed: train: 6 documents, ${stream.length} tokens → ${blockCount} blocks of 64 (the last ${stream.length % 64} tokens dropped)`)
  })

  it("rejects contradictory params before anything runs", async () => {
    const { cache, pipeline } = project(GSM8K_TEST)
    const file = pipeline(
      tokenize("both", `{ tokenizer: ${QWEN}, prompt: question, text: answer }`) +
        tokenize("bad_template", `{ tokenizer: ${QWEN}, template: "Question: {question", completion: answer }`) +
        tokenize("no_completion", `{ tokenizer: ${QWEN}, prompt: question }`) +
        tokenize("packed_pairs", `{ tokenizer: ${QWEN}, prompt: question, completion: answer, pack: { block_size: 8 } }`) +
        tokenize("packed_keep", `{ tokenizer: ${QWEN}, text: answer, keep: [question], pack: { block_size: 8 } }`)
    )
    const result = await cliInProcess(["run", file, "--cache-dir", cache])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain("give exactly one of prompt (a column), template (columns in a pattern) or text (plain documents)")
    expect(result.stderr).toContain("invalid template: \"{\" at character 11 does not open a placeholder such as {question} (write \"{{\" for a literal brace)")
    expect(result.stderr).toContain("give completion, the column the model learns to write, with prompt or template")
    expect(result.stderr).toContain("pack applies to text mode only")
    expect(result.stderr).toContain("keep does not apply with pack: a block spans several documents")
  })

  it("fails with a message naming the column, the folder or what is missing", async () => {
    const { dir, cache, pipeline } = project(GSM8K_TEST)
    const file = pipeline(
      tokenize("typo", `{ tokenizer: ${QWEN}, prompt: questions, completion: answer }`) +
        tokenize("no_folder", "{ tokenizer: ./qwen25, prompt: question, completion: answer }") +
        tokenize("hub", "{ tokenizer: Qwen/Qwen2.5-0.5B, prompt: question, completion: answer }") +
        tokenize("no_template", `{ tokenizer: ${QWEN}, prompt: question, completion: answer, chat_template: true }`)
    )
    // A hub that cannot be reached, and an empty hub cache: the hub id fails with the hub client's message.
    const saved = { endpoint: process.env.HF_ENDPOINT, cache: process.env.HF_HUB_CACHE }
    process.env.HF_ENDPOINT = "http://127.0.0.1:9"
    process.env.HF_HUB_CACHE = tempDir()
    const result = await run(file, cache).finally(() => {
      for (const [key, value] of [["HF_ENDPOINT", saved.endpoint], ["HF_HUB_CACHE", saved.cache]] as const) {
        if (value === undefined) delete process.env[key]
        else process.env[key] = value
      }
    })
    expect(result.code).toBe(1)
    expect(result.status).toEqual({ data: "ran", typo: "failed", no_folder: "failed", hub: "failed", no_template: "failed" })
    expect(result.stderr).toContain(`typo: failed: split "train" has no column "questions" (columns: question, answer)`)
    expect(result.stderr).toContain(`no_folder: failed: no tokenizer folder at ${dir}/qwen25`)
    expect(result.stderr).toContain("hub: failed: cannot reach http://127.0.0.1:9 and nothing is cached for model Qwen/Qwen2.5-0.5B")
    expect(result.stderr).toContain(`no_template: failed: chat_template: ${QWEN}/tokenizer_config.json has no chat_template`)
    expect(result.stderr).not.toMatch(/\n\s+at /)

    const withNull = writeFile(dir, "null.jsonl", `{"question": "1 + 1?", "answer": "2"}\n{"question": "2 + 2?", "answer": null}\n`)
    const nullFile = writeFile(dir, "null.yaml", `stages:\n  data:\n    uses: fetch\n    with: { path: ${withNull} }\n${tokenize("tokens", `{ tokenizer: ${QWEN}, prompt: question, completion: answer }`)}`)
    const nulls = await run(nullFile, cache)
    expect(nulls.stderr).toContain(`tokens: failed: split "train" row 1: "answer" is null`)
  })
})
