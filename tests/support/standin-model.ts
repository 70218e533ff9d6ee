/**
 * A stand-in for a hub checkpoint that cannot be downloaded here: Qwen2.5-0.5B's own
 * config.json, with any fields laid over it, and random weights of exactly that shape in
 * model.safetensors (F32, Hugging Face's names and layout). With the real tokenizer
 * beside it in the loopback hub, the tutorial's pipeline files run unchanged against it:
 * small (hidden 32) in the tests, full size in the benchmark.
 */
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import { decodeConfig } from "../../src/model/config.ts"
import { parameterSpecs } from "../../src/model/params.ts"
import { encodeHeader } from "../../src/model/safetensors.ts"
import { KeyedStream } from "../../src/random.ts"

const CONFIG = fileURLToPath(new URL("../fixtures/hub/qwen2.5-0.5b/config.json", import.meta.url))

/** config.json and model.safetensors for Qwen2.5-0.5B's config with `overrides`, weights uniform in ±0.04 (norms 1, biases 0). */
export const standInCheckpoint = (overrides: Readonly<Record<string, unknown>> = {}, seed = 0): Record<string, Uint8Array> => {
  const json = { ...(JSON.parse(readFileSync(CONFIG, "utf8")) as Record<string, unknown>), ...overrides, torch_dtype: "float32" }
  const config = Effect.runSync(decodeConfig(json, "stand-in config.json"))
  const specs = parameterSpecs(config)
  const header = encodeHeader(specs.map((spec) => ({ name: spec.name, shape: spec.checkpointShape })), { format: "pt" })
  const total = specs.reduce((n, spec) => n + spec.checkpointShape.reduce((a, b) => a * b, 1), 0)
  const file = new Uint8Array(header.byteLength + 4 * total)
  file.set(header)
  const values = new Float32Array(file.buffer, header.byteLength, total)
  let offset = 0
  specs.forEach((spec, index) => {
    const size = spec.checkpointShape.reduce((a, b) => a * b, 1)
    const target = values.subarray(offset, offset + size)
    if (spec.init === "ones") target.fill(1)
    else if (spec.init === "normal") target.set(new KeyedStream([seed, index]).uniform(size, -0.04, 0.04))
    offset += size
  })
  return { "config.json": new TextEncoder().encode(`${JSON.stringify(json, null, 2)}\n`), "model.safetensors": file }
}
