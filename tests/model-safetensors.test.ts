/**
 * safetensors reading and writing, on real files: dtype conversion against known bit
 * patterns, each error a user can meet, sharded checkpoints, and a model folder that
 * saves and loads back to identical tensors.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as tf from "@tensorflow/tfjs-core"
import { Effect } from "effect"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { initBackend } from "../src/backend/select.ts"
import { loadHfFolder, saveHfFolder } from "../src/model/hf-folder.ts"
import { disposeModel } from "../src/model/qwen2.ts"
import { encodeHeader, openSafetensors, toFloat32, writeSafetensors } from "../src/model/safetensors.ts"

const FIXTURE = path.resolve(__dirname, "../../shared/fixtures/qwen2-tiny")

const run = <A, E>(effect: Effect.Effect<A, E, NodeContext.NodeContext>): Promise<A> =>
  Effect.runPromise(effect.pipe(Effect.provide(NodeContext.layer)))

/** The error an effect fails with, as a message. */
const failure = async <A, E>(effect: Effect.Effect<A, E, NodeContext.NodeContext>): Promise<string> => {
  const error = await run(Effect.flip(effect))
  return error instanceof Error ? error.message : String(error)
}

const readTensor = (file: string, name: string, shape?: ReadonlyArray<number>) =>
  Effect.scoped(Effect.flatMap(openSafetensors(file), (reader) => reader.read(name, shape)))

/** A file with one tensor of raw little-endian bytes under a hand-written header. */
const rawFile = (file: string, header: Record<string, unknown>, data: Uint8Array): string => {
  const json = new TextEncoder().encode(JSON.stringify(header))
  const bytes = new Uint8Array(8 + json.length + data.length)
  new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true)
  bytes.set(json, 8)
  bytes.set(data, 8 + json.length)
  writeFileSync(file, bytes)
  return file
}

const u16 = (...values: Array<number>) => new Uint8Array(new Uint16Array(values).buffer)

let dir: string
beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "safetensors-"))
  await initBackend({ backend: "cpu" })
})
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("dtype conversion", () => {
  it("reads F16 bit patterns as the values they encode", () => {
    // 1, -2, 65504 (largest half), 2^-24 (smallest subnormal), 2^-14 (smallest normal), 0.333..., inf, -inf
    const values = toFloat32("F16", u16(0x3c00, 0xc000, 0x7bff, 0x0001, 0x0400, 0x3555, 0x7c00, 0xfc00, 0x8000))
    expect(Array.from(values)).toEqual([1, -2, 65504, 2 ** -24, 2 ** -14, 0.333251953125, Infinity, -Infinity, -0])
    expect(Number.isNaN(toFloat32("F16", u16(0x7e00))[0])).toBe(true)
  })

  it("reads BF16 as the top half of a float32", () => {
    const values = toFloat32("BF16", u16(0x3f80, 0xc049, 0x4780, 0x0001, 0x7f80))
    expect(Array.from(values)).toEqual([1, -3.140625, 65536, 2 ** -133, Infinity])
  })

  it("reads F32 from unaligned bytes", () => {
    const bytes = new Uint8Array(9)
    new DataView(bytes.buffer).setFloat32(1, 1.5, true)
    new DataView(bytes.buffer).setFloat32(5, -0.25, true)
    expect(Array.from(toFloat32("F32", bytes.subarray(1)))).toEqual([1.5, -0.25])
  })

  it("loads F16 and BF16 tensors from a file", async () => {
    const file = rawFile(path.join(dir, "half.safetensors"), {
      a: { dtype: "F16", shape: [2], data_offsets: [0, 4] },
      b: { dtype: "BF16", shape: [1, 2], data_offsets: [4, 8] }
    }, u16(0x3c00, 0xbc00, 0x4000, 0xc080))
    expect(Array.from(await run(readTensor(file, "a")))).toEqual([1, -1])
    expect(Array.from(await run(readTensor(file, "b", [1, 2])))).toEqual([2, -4])
  })
})

describe("errors", () => {
  it("names a missing file", async () => {
    expect(await failure(readTensor(path.join(dir, "absent.safetensors"), "x"))).toMatch(/absent\.safetensors: cannot open/)
  })

  it("refuses a header longer than the file", async () => {
    const file = path.join(dir, "short-header.safetensors")
    const bytes = new Uint8Array(20)
    new DataView(bytes.buffer).setBigUint64(0, 1000n, true)
    writeFileSync(file, bytes)
    expect(await failure(readTensor(file, "x"))).toMatch(/truncated: the header says it is 1000 bytes long, but the file has 12/)
  })

  it("refuses a file cut off inside the data, naming the tensor", async () => {
    const full = path.join(dir, "full.safetensors")
    await run(writeSafetensors(full, [{ name: "w", shape: [4, 4], data: new Float32Array(16).fill(1) }]))
    const cut = path.join(dir, "cut.safetensors")
    writeFileSync(cut, readFileSync(full).subarray(0, -10))
    expect(await failure(readTensor(cut, "w"))).toMatch(/cut\.safetensors: truncated: tensor w ends at byte 64 of the data, but the file holds only 54/)
  })

  it("names the tensor and both shapes on a shape mismatch", async () => {
    const file = path.join(dir, "shape.safetensors")
    await run(writeSafetensors(file, [{ name: "model.norm.weight", shape: [2, 3], data: new Float32Array(6) }]))
    expect(await failure(readTensor(file, "model.norm.weight", [3, 2]))).toMatch(
      /tensor model\.norm\.weight has shape \[2, 3\], the model expects \[3, 2\]/
    )
  })

  it("refuses an unknown dtype, naming the tensor", async () => {
    const file = rawFile(path.join(dir, "dtype.safetensors"), { x: { dtype: "F8_E4M3", shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2))
    expect(await failure(readTensor(file, "x"))).toMatch(/tensor x has dtype "F8_E4M3"; supported: F32, F16, BF16/)
  })

  it("refuses data offsets that disagree with dtype and shape", async () => {
    const file = rawFile(path.join(dir, "span.safetensors"), { x: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8))
    expect(await failure(readTensor(file, "x"))).toMatch(/tensor x \(F32 \[3\]\) should span 12 bytes, its data_offsets span 8/)
  })
})

describe("writing", () => {
  it("writes an 8-aligned header with format pt metadata that reads back", async () => {
    const file = path.join(dir, "roundtrip.safetensors")
    const data = Float32Array.from({ length: 6 }, (_, i) => i / 3)
    await run(writeSafetensors(file, [{ name: "t", shape: [2, 3], data }]))
    const header = encodeHeader([{ name: "t", shape: [2, 3] }], { format: "pt" })
    expect((header.length - 8) % 8).toBe(0)
    const json = JSON.parse(new TextDecoder().decode(readFileSync(file).subarray(8, header.length)))
    expect(json).toEqual({ __metadata__: { format: "pt" }, t: { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] } })
    expect(Array.from(await run(readTensor(file, "t", [2, 3])))).toEqual(Array.from(data))
  })
})

describe("model folders", () => {
  it("saves and loads back identical tensors, config and tokenizer files", async () => {
    const { model, rawConfig } = await run(loadHfFolder(FIXTURE))
    const source = path.join(dir, "with-tokenizer")
    const saved = path.join(dir, "saved")
    await run(saveHfFolder(model, source, { rawConfig }))
    writeFileSync(path.join(source, "tokenizer.json"), "{\"model\": {}}")
    await run(saveHfFolder(model, saved, { rawConfig, copyFrom: source }))
    const again = await run(loadHfFolder(saved))
    for (const [name, variable] of model.params) {
      expect(Array.from(again.model.params.get(name)?.dataSync() ?? []), name).toEqual(Array.from(variable.dataSync()))
    }
    expect(readFileSync(path.join(saved, "tokenizer.json"), "utf8")).toBe("{\"model\": {}}")
    const config = JSON.parse(readFileSync(path.join(saved, "config.json"), "utf8"))
    expect(config).toMatchObject({ architectures: ["Qwen2ForCausalLM"], hidden_size: 64, tie_word_embeddings: true, max_window_layers: 28 })
    expect(config.head_dim).toBeUndefined()
    expect(JSON.parse(readFileSync(path.join(saved, "generation_config.json"), "utf8"))).toEqual({ _from_model_config: true })
    // Byte for byte what transformers wrote: same layout, same names, no lm_head (tied).
    const ours = await run(Effect.scoped(Effect.map(openSafetensors(path.join(saved, "model.safetensors")), (r) => r.header)))
    const theirs = await run(Effect.scoped(Effect.map(openSafetensors(path.join(FIXTURE, "model.safetensors")), (r) => r.header)))
    expect([...ours.tensors.keys()].sort()).toEqual([...theirs.tensors.keys()].sort())
    expect(ours.metadata).toEqual({ format: "pt" })
    disposeModel(model)
    disposeModel(again.model)
  })

  it("loads a checkpoint sharded by model.safetensors.index.json", async () => {
    const { model } = await run(loadHfFolder(FIXTURE))
    const sharded = path.join(dir, "sharded")
    await run(saveHfFolder(model, sharded))
    const whole = path.join(sharded, "model.safetensors")
    const names = [...model.params.keys()]
    const reader = (name: string) => run(readTensor(whole, name))
    const shards = [names.slice(0, 10), names.slice(10)]
    const weightMap: Record<string, string> = {}
    for (const [i, shard] of shards.entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`
      const tensors = await Promise.all(shard.map(async (name) => ({ name, shape: model.specs.find((s) => s.name === name)?.checkpointShape ?? [], data: await reader(name) })))
      await run(writeSafetensors(path.join(sharded, file), tensors))
      shard.forEach((name) => (weightMap[name] = file))
    }
    rmSync(whole)
    writeFileSync(path.join(sharded, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }))
    const loaded = await run(loadHfFolder(sharded))
    for (const [name, variable] of model.params) {
      expect(Array.from(loaded.model.params.get(name)?.dataSync() ?? []), name).toEqual(Array.from(variable.dataSync()))
    }
    disposeModel(model)
    disposeModel(loaded.model)
    expect(tf.memory().numTensors).toBe(0)
  })

  it("says which file is missing", async () => {
    const empty = path.join(dir, "empty")
    mkdirSync(empty)
    expect(await failure(loadHfFolder(empty))).toMatch(/config\.json: cannot read/)
  })

  it("refuses a checkpoint that lacks a parameter, naming it", async () => {
    const { model, rawConfig } = await run(loadHfFolder(FIXTURE))
    const partial = path.join(dir, "partial")
    await run(saveHfFolder(model, partial, { rawConfig }))
    const keep = [...model.params.keys()].filter((name) => name !== "model.norm.weight")
    const tensors = await Promise.all(keep.map(async (name) => ({
      name,
      shape: model.specs.find((s) => s.name === name)?.checkpointShape ?? [],
      data: await run(readTensor(path.join(partial, "model.safetensors"), name))
    })))
    await run(writeSafetensors(path.join(partial, "model.safetensors"), tensors))
    expect(await failure(loadHfFolder(partial))).toMatch(/has no tensor model\.norm\.weight/)
    disposeModel(model)
    expect(tf.memory().numTensors).toBe(0)
  })
})
