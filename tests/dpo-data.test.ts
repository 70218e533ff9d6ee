/**
 * DPO's data as TRL reads it: truncation (the end of the prompt, the start of each
 * completion, the start of prompt + completion), the rows of a micro-batch, and TRL's
 * token columns giving exactly what the text columns give once tokenized with an EOS.
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { collatePairs, truncatePair } from "../src/dpo/pairs.ts"
import type { Tokenizer } from "../src/tokenizer.ts"
import { cliAsync, projectTempDir, tempDir, writeFile } from "./helpers.ts"
import { writeTinyModel } from "./support/tiny-model.ts"

const ids = (...values: Array<number>) => Int32Array.from(values)

describe("pairs", () => {
  it("truncate as TRL does: the end of the prompt, the start of each completion", () => {
    const pair = { prompt: ids(1, 2, 3, 4, 5), chosen: ids(10, 11, 12, 13), rejected: ids(20, 21) }
    const cut = truncatePair(pair, { maxLength: undefined, maxPromptLength: 3, maxCompletionLength: 3 })
    expect([...cut.prompt]).toEqual([3, 4, 5])
    expect([...cut.chosen]).toEqual([10, 11, 12])
    expect([...cut.rejected]).toEqual([20, 21])
    expect(truncatePair(pair, { maxLength: undefined, maxPromptLength: undefined, maxCompletionLength: undefined })).toEqual(pair)
  })

  it("make a micro-batch of the chosen rows then the rejected ones, the prompt masked, cut at max_length and right-padded", () => {
    const pairs = [
      { prompt: ids(1, 2), chosen: ids(10, 11, 12), rejected: ids(20) },
      { prompt: ids(3), chosen: ids(30), rejected: ids(40, 41, 42, 43, 44) }
    ]
    const batch = collatePairs(pairs, 0, 5)
    expect(batch.size).toBe(4)
    expect(batch.length).toBe(5)
    const rows = (values: Int32Array) => Array.from({ length: 4 }, (_, r) => [...values.subarray(r * 5, r * 5 + 5)])
    expect(rows(batch.inputIds)).toEqual([[1, 2, 10, 11, 12], [3, 30, 0, 0, 0], [1, 2, 20, 0, 0], [3, 40, 41, 42, 43]])
    expect(rows(batch.labels)).toEqual([[-100, -100, 10, 11, 12], [-100, 30, -100, -100, -100], [-100, -100, 20, -100, -100], [-100, 40, 41, 42, 43]])
    expect(rows(batch.attentionMask)).toEqual([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
  })
})

describe("TRL's token columns", () => {
  let dir: string
  let tokenizer: Tokenizer

  beforeAll(async () => {
    dir = projectTempDir()
    tokenizer = await writeTinyModel(join(dir, "tiny-model"), { seed: 7 })
  }, 300_000)

  it("give the reference log-probabilities the text columns give", async () => {
    const texts = [
      { prompt: "What is 2 + 3? ", chosen: "5.", rejected: "6." },
      { prompt: "What is 9 - 4? ", chosen: "5.", rejected: "4." },
      { prompt: "Say hi. ", chosen: "hi", rejected: "bye now" }
    ]
    const encode = (text: string) => [...tokenizer.encode(text, { addSpecialTokens: false })]
    const eos = tokenizer.eosTokenId!
    writeFile(dir, "text.jsonl", texts.map((t) => JSON.stringify(t)).join("\n") + "\n")
    writeFile(dir, "ids.jsonl", texts.map((t) => JSON.stringify({
      prompt_input_ids: encode(t.prompt),
      chosen_input_ids: [...encode(t.chosen), eos],
      rejected_input_ids: [...encode(t.rejected), eos]
    })).join("\n") + "\n")
    const reference = async (data: string) => {
      const cache = tempDir()
      const file = writeFile(dir, `${data}.yaml`, `name: cols
stages:
  pairs:
    uses: fetch
    with: { path: ${data}.jsonl }
  dpo:
    uses: dpo
    needs: [pairs]
    with: { model: ./tiny-model, max_steps: 1, batch_size: 3 }
`)
      const run = await cliAsync(["run", file, "--cache-dir", cache])
      expect(run.code, run.stderr).toBe(0)
      const shown = await cliAsync(["show", file, "dpo", "--split", "train", "--format", "jsonl", "--cache-dir", cache])
      expect(shown.code, shown.stderr).toBe(0)
      return shown.stdout.trim().split("\n").map((line) => JSON.parse(line) as Record<string, number>)
    }
    const fromText = await reference("text")
    expect(fromText).toHaveLength(3)
    expect(fromText.map((r) => r.chosen_tokens)).toEqual(texts.map((t) => encode(t.chosen).length + 1))
    expect(await reference("ids")).toEqual(fromText)
    expect(readFileSync(join(dir, "ids.jsonl"), "utf8")).toContain("prompt_input_ids")
  }, 600_000)
})
