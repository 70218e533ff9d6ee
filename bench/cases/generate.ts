/**
 * One benchmark case: greedy generation from a preset model (random weights: the work
 * per token does not depend on them), with and without the KV cache. EOS is disabled so
 * that every run makes exactly --new tokens. Prints one JSON line.
 *
 *   node --import tsx bench/cases/generate.ts --preset tiny --prompt 32 --new 64 --batch 1 --cache on
 */
import { Effect } from "effect"
import { parseArgs } from "node:util"
import { ensureBackend } from "../../src/backend/runtime.ts"
import { generate } from "../../src/model/generate.ts"
import { initModel } from "../../src/model/qwen2.ts"
import { isPreset, presetConfig } from "../presets.ts"
import { CpuMeter, median, peakRssMb, splitMix } from "./measure.ts"

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
if (!isPreset(preset)) throw new Error(`--preset ${preset}: expected tiny, small or qwen2.5-0.5b-slice`)
const [promptLength, newTokens, batch, repeats] = [args.prompt, args.new, args.batch, args.repeats].map(Number) as [number, number, number, number]
const useCache = args.cache !== "off"

const backend = await Effect.runPromise(ensureBackend)
const config = await presetConfig(preset)
const model = initModel(config, 0)
const random = splitMix(1)
const prompts = Array.from({ length: batch }, () => Array.from({ length: promptLength }, () => Math.floor(random() * config.vocab_size)))
const options = { maxNewTokens: newTokens, useCache, eosTokenIds: [] as Array<number> }

generate(model, prompts, { ...options, maxNewTokens: 2 }) // warm-up: kernels, XNNPACK packing
const meter = new CpuMeter()
const seconds: Array<number> = []
for (let i = 0; i < repeats; i++) {
  const started = performance.now()
  const out = generate(model, prompts, options)
  seconds.push((performance.now() - started) / 1000)
  if (out.tokens.some((row) => row.length !== newTokens)) throw new Error("generation stopped early")
}
const step = median(seconds)
console.log(JSON.stringify({
  impl: "tfjs",
  backend: backend.name,
  threads: backend.threads,
  preset,
  kv_cache: useCache,
  batch,
  prompt_tokens: promptLength,
  new_tokens: newTokens,
  median_s: Math.round(step * 1e4) / 1e4,
  tokens_per_s: Math.round((batch * newTokens / step) * 10) / 10,
  peak_rss_mb: peakRssMb(),
  others_cpu_frac: meter.othersFraction()
}))
