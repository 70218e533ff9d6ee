/**
 * One benchmark case: greedy generation from a preset model (random weights: the work
 * per token does not depend on them), with and without the KV cache. EOS is disabled so
 * that every run makes exactly --new tokens. The prompts are bench/infer_torch.py's
 * (`promptIds`), so that PyTorch generates from the same ids. Prints one JSON line:
 * tokens/s over the whole run (prompts included), the time to the first tokens (the
 * prompts' forward pass), and the decoding rate after it.
 *
 *   node --import tsx bench/cases/generate.ts --preset tiny --prompt 32 --new 64 --batch 1 --cache on
 */
import { Effect } from "effect"
import { parseArgs } from "node:util"
import { ensureBackend } from "../../src/backend/runtime.ts"
import { GenerationRun } from "../../src/model/generate.ts"
import { modelFromHost } from "../../src/model/qwen2.ts"
import { isPreset, presetConfig, randomHostWeights } from "../presets.ts"
import { CpuMeter, median, peakRssMb } from "./measure.ts"

const { values: args } = parseArgs({
  options: {
    preset: { type: "string", default: "tiny" },
    prompt: { type: "string", default: "32" },
    new: { type: "string", default: "64" },
    batch: { type: "string", default: "1" },
    cache: { type: "string", default: "on" },
    repeats: { type: "string", default: "3" }
  }
})
const preset = args.preset ?? "tiny"
if (!isPreset(preset)) throw new Error(`--preset ${preset}: expected tiny, small, qwen2.5-0.5b-slice or qwen2.5-0.5b`)
const [promptLength, newTokens, batch, repeats] = [args.prompt, args.new, args.batch, args.repeats].map(Number) as [number, number, number, number]
const useCache = args.cache !== "off"

/** bench/infer_torch.py's prompt_ids: row r, position j → (r·7919 + j·104729 + 1) mod vocab. */
export const promptIds = (rows: number, length: number, vocab: number): Array<Array<number>> =>
  Array.from({ length: rows }, (_, r) => Array.from({ length }, (_, j) => (r * 7919 + j * 104729 + 1) % vocab))

const backend = await Effect.runPromise(ensureBackend)
const config = await presetConfig(preset)
const model = modelFromHost(config, randomHostWeights(config, 0))
const prompts = promptIds(batch, promptLength, config.vocab_size)
const options = { maxNewTokens: newTokens, useCache, eosTokenIds: [] as Array<number>, batchSize: batch }

/** One generation: its seconds in all, and to the first tokens. */
const timed = (maxNewTokens: number) => {
  const run = new GenerationRun(model, prompts, { ...options, maxNewTokens })
  try {
    const started = performance.now()
    run.step()
    const first = performance.now()
    while (!run.done) run.step()
    const ended = performance.now()
    if (run.result().tokens.some((row) => row.length !== maxNewTokens)) throw new Error("generation stopped early")
    return { seconds: (ended - started) / 1000, firstSeconds: (first - started) / 1000 }
  } finally {
    run.dispose()
  }
}

timed(2) // warm-up: kernels, XNNPACK packing
const meter = new CpuMeter()
const runs = Array.from({ length: repeats }, () => timed(newTokens))
const seconds = median(runs.map((run) => run.seconds))
const firstSeconds = median(runs.map((run) => run.firstSeconds))
console.log(JSON.stringify({
  impl: "tfjs",
  backend: backend.name,
  threads: backend.threads,
  preset,
  kv_cache: useCache,
  batch,
  prompt_tokens: promptLength,
  new_tokens: newTokens,
  median_s: Math.round(seconds * 1e4) / 1e4,
  tokens_per_s: Math.round((batch * newTokens / seconds) * 100) / 100,
  first_token_s: Math.round(firstSeconds * 1e4) / 1e4,
  decode_tokens_per_s: Math.round((batch * (newTokens - 1) / Math.max(1e-9, seconds - firstSeconds)) * 100) / 100,
  peak_rss_mb: peakRssMb(),
  others_cpu_frac: meter.othersFraction()
}))
