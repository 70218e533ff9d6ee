// A worker of the tokenize stage's encode pool (pool.ts): builds the tokenizer from the
// same files and the same way as tokenizer.ts, then encodes the batches of texts it is
// sent, without special tokens, and answers with their ids. Plain JavaScript: workers
// start without a TypeScript loader.
import { Tokenizer } from "@huggingface/tokenizers"
import { readFileSync } from "node:fs"
import { parentPort, workerData } from "node:worker_threads"
import { installWordMemo } from "./word-memo.mjs"

const { json, config } = workerData
const tokenizer = new Tokenizer(JSON.parse(readFileSync(json, "utf8")), JSON.parse(readFileSync(config, "utf8")))
installWordMemo(tokenizer)

parentPort.on("message", ({ id, texts }) => {
  try {
    const ids = texts.map((text) => Int32Array.from(tokenizer.encode(text, { add_special_tokens: false }).ids))
    parentPort.postMessage({ id, ids }, ids.map((a) => a.buffer))
  } catch (error) {
    parentPort.postMessage({ id, error: error instanceof Error ? error.message : String(error) })
  }
})
parentPort.postMessage({ ready: true })
