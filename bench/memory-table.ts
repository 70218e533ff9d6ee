/**
 * Which model sizes fit, and how: inference, LoRA (r 16 on every linear layer) and full
 * fine-tuning, at the tutorial's batch (5 × 512), on the wasm heap and in a machine's
 * memory. Computed by the memory check itself (src/backend/memory.ts, fitted to the heap
 * the benchmark measured), from each model's config.json. Prints the README's table.
 *
 *   node --import tsx bench/memory-table.ts [--memory-gib 24]
 */
import { Effect, Either } from "effect"
import { parseArgs } from "node:util"
import { estimateInference, estimateTraining } from "../src/backend/memory.ts"
import { WASM_HEAP_MAX_BYTES } from "../src/backend/wasm-internals.ts"
import { decodeConfig } from "../src/model/config.ts"
import { ALL_LINEAR, DEFAULT_LORA, planLora } from "../src/model/lora.ts"

const { values: args } = parseArgs({ options: { "memory-gib": { type: "string", default: "24" } } })
const hostBytes = 0.9 * Number(args["memory-gib"]) * 2 ** 30

/** The config.json fields that size each model (from their hub repositories). */
const MODELS: ReadonlyArray<readonly [string, Record<string, unknown>]> = [
  ["SmolLM2-135M", { architectures: ["LlamaForCausalLM"], vocab_size: 49152, hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, tie_word_embeddings: true }],
  ["SmolLM2-360M", { architectures: ["LlamaForCausalLM"], vocab_size: 49152, hidden_size: 960, intermediate_size: 2560, num_hidden_layers: 32, num_attention_heads: 15, num_key_value_heads: 5, tie_word_embeddings: true }],
  ["Qwen2.5-0.5B", { architectures: ["Qwen2ForCausalLM"], vocab_size: 151936, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, tie_word_embeddings: true }],
  ["Qwen2.5-1.5B", { architectures: ["Qwen2ForCausalLM"], vocab_size: 151936, hidden_size: 1536, intermediate_size: 8960, num_hidden_layers: 28, num_attention_heads: 12, num_key_value_heads: 2, tie_word_embeddings: true }],
  ["SmolLM2-1.7B", { architectures: ["LlamaForCausalLM"], vocab_size: 49152, hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 24, num_attention_heads: 32, num_key_value_heads: 32, tie_word_embeddings: true }],
  ["Qwen2.5-3B", { architectures: ["Qwen2ForCausalLM"], vocab_size: 151936, hidden_size: 2048, intermediate_size: 11008, num_hidden_layers: 36, num_attention_heads: 16, num_key_value_heads: 2, tie_word_embeddings: true }],
  ["Qwen2.5-7B", { architectures: ["Qwen2ForCausalLM"], vocab_size: 152064, hidden_size: 3584, intermediate_size: 18944, num_hidden_layers: 28, num_attention_heads: 28, num_key_value_heads: 4, tie_word_embeddings: false }]
]

const gib = (bytes: number) => (bytes / 2 ** 30).toFixed(1)
const verdict = (heap: number, total: number) =>
  heap > WASM_HEAP_MAX_BYTES ? `no: heap ${gib(heap)} GiB` : total > hostBytes ? `no: ${gib(total)} GiB of memory` : `yes: heap ${gib(heap)}, memory ${gib(total)} GiB`

const rows = MODELS.map(([name, json]) => {
  const config = Effect.runSync(decodeConfig(json, name))
  const inference = estimateInference(config)
  const lora = Either.getOrThrow(planLora(config, { ...DEFAULT_LORA, r: 16, lora_alpha: 32, target_modules: ALL_LINEAR }))
  const shape = { batchSize: 5, seqLen: 512 }
  const withAdapter = estimateTraining(config, { ...shape, adapter: lora })
  const full = estimateTraining(config, shape)
  // On wasm the heap is part of the process's memory: inference needs little else.
  const inferenceMemory = inference.wasmHeapBytes + 0.35 * 2 ** 30
  return `| ${name} | ${(inference.parameters / 1e6).toFixed(0)}M | ${verdict(inference.wasmHeapBytes, inferenceMemory)} | ${verdict(withAdapter.backendPeakBytes, withAdapter.totalBytes)} | ${verdict(full.backendPeakBytes, full.totalBytes)} |`
})

console.log([
  `| model | parameters | inference on wasm | LoRA r 16, all linear, 5 × 512 | full fine-tuning, 5 × 512 |`,
  "|---|---|---|---|---|",
  ...rows
].join("\n"))
console.log(`\nA machine with ${args["memory-gib"]} GiB (90% of it planned with); the wasm heap is capped at 4 GiB.`)
