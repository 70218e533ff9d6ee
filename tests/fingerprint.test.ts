import { describe, expect, it } from "vitest"
import { canonicalJson, ENGINE_VERSION, explainChange, type FingerprintMaterial, fingerprintOf } from "../src/fingerprint.ts"
import { cliInProcess, GSM8K_TEST, samplePipeline, tempDir, writeFile } from "./helpers.ts"

const material: FingerprintMaterial = {
  engine: ENGINE_VERSION,
  stage: "shuffle",
  code: "1+abc",
  params: { seed: 42, splits: ["train"] },
  inputs: { data: "d1" },
  files: {},
  external: {}
}

const statusJson = async (file: string, cache: string) => {
  const result = await cliInProcess(["status", file, "--json", "--cache-dir", cache])
  expect(result.code).toBe(0)
  return JSON.parse(result.stdout) as { stages: Array<{ id: string; fingerprint: string; state: string; reasons: Array<string> }> }
}

describe("fingerprint", () => {
  it("canonical JSON sorts keys at every depth", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: null } })).toBe('{"a":{"c":null,"d":[1,{"y":2,"z":1}]},"b":1}')
    expect(fingerprintOf(material)).toBe(fingerprintOf({ ...material, params: { splits: ["train"], seed: 42 } }))
    expect(fingerprintOf(material)).not.toBe(fingerprintOf({ ...material, params: { ...material.params, seed: 7 } }))
  })

  it("explains each kind of change in words", () => {
    expect(explainChange(undefined, material)).toEqual(["never run"])
    expect(explainChange(material, { ...material, params: { ...material.params, seed: 7 } })).toEqual(["param `seed` changed 42→7"])
    expect(explainChange(material, { ...material, code: "2+def" })).toEqual(["code version changed 1→2"])
    // The same declared version, another import closure: which files and packages changed.
    const code = { ...material, code: "1+abc", sources: { "shuffle.ts": "s1", "../src/random.ts": "r1", "npm:effect": "3.1.0" } }
    expect(explainChange(code, { ...code, code: "1+def", sources: { ...code.sources, "../src/random.ts": "r2" } }))
      .toEqual(["code changed: ../src/random.ts"])
    expect(explainChange(code, { ...code, code: "1+def", sources: { "shuffle.ts": "s1", "../src/random.ts": "r1", "npm:effect": "3.2.0", "lib.ts": "l" } }))
      .toEqual(["code changed: lib.ts (new import), package effect 3.1.0→3.2.0"])
    expect(explainChange(material, { ...material, inputs: { data: "d2" } })).toEqual(["input `data` changed"])
    expect(explainChange(material, { ...material, files: { "a.jsonl": "x" } })).toEqual(["file `a.jsonl` added"])
    expect(explainChange(material, { ...material, params: { seed: 42 } })).toEqual(['param `splits` removed (was ["train"])'])
    const sha = (c: string) => c.repeat(40)
    const pinned = { ...material, external: { "hf:datasets/openai/gsm8k@main": sha("a") } }
    expect(explainChange(pinned, { ...material, external: { "hf:datasets/openai/gsm8k@main": sha("b") } }))
      .toEqual(["external `hf:datasets/openai/gsm8k@main` changed aaaaaaaa→bbbbbbbb"])
  })

  it("does not depend on key order in the YAML file, but does on values", async () => {
    const dir = tempDir()
    const cache = tempDir()
    const a = writeFile(dir, "a.yaml", samplePipeline(GSM8K_TEST))
    const b = writeFile(dir, "b.yaml", `stages:
  short:
    with: { where: "question.length < 400" }
    needs: [shuffled]
    uses: filter
  shuffled:
    with: { seed: 42 }
    needs: [data]
    uses: shuffle
  data:
    with: { path: ${JSON.stringify(GSM8K_TEST)} }
    uses: fetch
name: sample
`)
    expect((await cliInProcess(["run", a, "--cache-dir", cache])).code).toBe(0)
    const first = await statusJson(a, cache)
    const second = await statusJson(b, cache)
    expect(second.stages.map((s) => [s.id, s.fingerprint, s.state]).sort()).toEqual(first.stages.map((s) => [s.id, s.fingerprint, s.state]).sort())
    expect(second.stages.every((s) => s.state === "fresh")).toBe(true)
    const c = writeFile(dir, "c.yaml", samplePipeline(GSM8K_TEST).replace("seed: 42", "seed: 43"))
    const third = await statusJson(c, cache)
    expect(third.stages.find((s) => s.id === "data")!.fingerprint).toBe(first.stages.find((s) => s.id === "data")!.fingerprint)
    expect(third.stages.find((s) => s.id === "shuffled")!.fingerprint).not.toBe(first.stages.find((s) => s.id === "shuffled")!.fingerprint)
  })

  it("treats an explicit default like an omitted one", async () => {
    const dir = tempDir()
    const cache = tempDir()
    const implicit = writeFile(dir, "a.yaml", samplePipeline(GSM8K_TEST).replace("{ seed: 42 }", "{}"))
    const explicit = writeFile(dir, "b.yaml", samplePipeline(GSM8K_TEST))
    const a = await statusJson(implicit, cache)
    const b = await statusJson(explicit, cache)
    expect(a.stages.find((s) => s.id === "data")!.fingerprint).toBe(b.stages.find((s) => s.id === "data")!.fingerprint)
    expect((await cliInProcess(["run", implicit, "--cache-dir", cache])).code).toBe(0)
    expect((await statusJson(explicit, cache)).stages.every((s) => s.state === "fresh")).toBe(true)
  })
})
