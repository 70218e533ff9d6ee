import { Effect, Either } from "effect"
import { describe, expect, it } from "vitest"
import type { SpecError, UsageError } from "../src/errors.ts"
import { loadPipeline } from "../src/pipeline.ts"
import { parseOverride, readSpec } from "../src/spec.ts"
import { GSM8K_TEST, runNode, samplePipeline, tempDir, writeFile } from "./helpers.ts"

const specErrorOf = async (yaml: string, overrides: ReadonlyArray<string> = []) => {
  const dir = tempDir()
  const file = writeFile(dir, "p.yaml", yaml)
  const parsed = overrides.map((o) => Either.getOrThrow(parseOverride(o)))
  const result = await runNode(Effect.either(loadPipeline(file, parsed)))
  if (Either.isRight(result)) throw new Error("expected the pipeline to be rejected")
  return result.left as SpecError
}

describe("pipeline spec", () => {
  it("accepts the issue's example and orders stages topologically", async () => {
    const dir = tempDir()
    const file = writeFile(dir, "p.yaml", `stages:
  short: { uses: filter, needs: [shuffled], with: { where: "question.length < 400" } }
  shuffled: { uses: shuffle, needs: data, with: { seed: 42 } }
  data: { uses: fetch, with: { path: ${JSON.stringify(GSM8K_TEST)} } }
`)
    const pipeline = await runNode(loadPipeline(file))
    expect(pipeline.spec.name).toBe("p")
    expect(pipeline.stages.map((s) => s.id)).toEqual(["data", "shuffled", "short"])
    expect(pipeline.stages[1]!.params).toEqual({ seed: 42, batch_size: 16_384 })
  })

  it("reports YAML syntax errors with line and column", async () => {
    const error = await specErrorOf("stages:\n  a: {uses: fetch\n  b: [\n")
    expect(error._tag).toBe("SpecError")
    expect(error.message).toMatch(/(^|\/)p\.yaml:\d+:\d+: /m)
    expect(error.message).toMatch(/Flow map/)
  })

  it("reports a wrong top-level key and the stages' param errors together", async () => {
    const error = await specErrorOf(`name: [1]\n${samplePipeline(GSM8K_TEST).replace("name: sample\n", "").replace("{ seed: 42 }", "{ sed: 42 }")}`)
    expect(error.message.split("\n")).toEqual([
      expect.stringMatching(/p\.yaml:1:7 name: expected string, got \[1\]$/),
      expect.stringMatching(/p\.yaml:9:13 stages\.shuffled\.with\.sed: unknown key \(did you mean "seed"\?\)$/)
    ])
  })

  it("a stage called constructor or toString is not taken for a built-in", async () => {
    for (const uses of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
      const error = await specErrorOf(samplePipeline(GSM8K_TEST).replace("uses: shuffle", `uses: ${uses}`))
      expect(error.message).toMatch(new RegExp(`stages\\.shuffled\\.uses: unknown stage "${uses.replace(/[_]/g, "_")}"`))
    }
  })

  it("rejects an unknown key with its location and a suggestion", async () => {
    const error = await specErrorOf(samplePipeline(GSM8K_TEST).replace("{ seed: 42 }", "{ sed: 42 }"))
    expect(error.message).toContain('p.yaml:9:13 stages.shuffled.with.sed: unknown key (did you mean "seed"?)')
  })

  it("rejects a value of the wrong type, pointing at the value", async () => {
    const error = await specErrorOf(samplePipeline(GSM8K_TEST).replace("{ seed: 42 }", "{ seed: forty-two }"))
    expect(error.message).toContain('p.yaml:9:19 stages.shuffled.with.seed: expected')
    expect(error.message).toContain('"forty-two"')
  })

  it("rejects a missing required param, and a stage's own cross-field rule", async () => {
    const error = await specErrorOf(samplePipeline(GSM8K_TEST, "  first: { uses: select, needs: [short], with: { offset: 2 } }\n"))
    expect(error.message).toContain("stages.first.with.rows: is required but missing")
    const both = await specErrorOf(`stages:\n  data:\n    uses: fetch\n    with: { split: train }\n`)
    expect(both.message).toMatch(/p\.yaml:4:11 stages\.data\.with: give exactly one source: `path` \(local files\) or `dataset`/)
  })

  it("rejects an unknown stage with a suggestion and the list of built-ins", async () => {
    const typo = await specErrorOf(samplePipeline(GSM8K_TEST).replace("uses: shuffle", "uses: shufle"))
    expect(typo.message).toContain('p.yaml:7:11 stages.shuffled.uses: unknown stage "shufle" (did you mean "shuffle"?)')
    const unknown = await specErrorOf(samplePipeline(GSM8K_TEST).replace("uses: shuffle", "uses: transmogrify"))
    expect(unknown.message).toMatch(/unknown stage "transmogrify" \(built-in stages: .*fetch.*; a plug-in is a path/)
  })

  it("rejects a dangling need with a suggestion", async () => {
    const error = await specErrorOf(samplePipeline(GSM8K_TEST).replace("needs: [shuffled]", "needs: [shufled]"))
    expect(error.message).toContain('stages.short.needs: no stage named "shufled" (did you mean "shuffled"?)')
  })

  it("names the cycle", async () => {
    const error = await specErrorOf(`stages:
  a: { uses: shuffle, needs: [c] }
  b: { uses: shuffle, needs: [a] }
  c: { uses: shuffle, needs: b }
`)
    expect(error.message).toContain("the stages form a cycle: a → c → b → a")
    expect(error.message).toMatch(/(^|\/)p\.yaml:2:\d+ stages\.a\.needs/)
  })

  it("rejects a stage fed an artifact kind it does not read", async () => {
    const error = await specErrorOf(samplePipeline(GSM8K_TEST).replace("needs: [data]", "needs: []"))
    expect(error.message).toContain('stage "shuffled" (shuffle) needs 1 upstream stage(s), got 0')
  })

  it("reports every problem at once, in file order", async () => {
    const error = await specErrorOf(`stages:
  data: { uses: fetch, with: { pth: x } }
  b: { uses: shuffle, needs: [nope] }
`)
    const lines = error.message.split("\n")
    expect(lines).toHaveLength(2)
    expect(lines[0]).toMatch(/(^|\/)p\.yaml:2:/)
    expect(lines[1]).toMatch(/(^|\/)p\.yaml:3:/)
  })

  it("applies --set overrides, parsing values as YAML, and locates errors at the flag", async () => {
    const dir = tempDir()
    const file = writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST))
    const pipeline = await runNode(loadPipeline(file, [Either.getOrThrow(parseOverride("shuffled.seed=7"))]))
    expect(pipeline.stages.find((s) => s.id === "shuffled")!.params).toEqual({ seed: 7, batch_size: 16_384 })
    const error = await specErrorOf(samplePipeline(GSM8K_TEST), ["shuffled.seed=abc"])
    expect(error.message).toContain('--set shuffled.seed=abc stages.shuffled.with.seed: expected')
    const typo = await specErrorOf(samplePipeline(GSM8K_TEST), ["shuffled.sed=1"])
    expect(typo.message).toContain('--set shuffled.sed=1 stages.shuffled.with.sed: unknown key (did you mean "seed"?)')
  })

  it("rejects malformed --set flags and unknown stages in them", async () => {
    expect(Either.isLeft(parseOverride("seed=7"))).toBe(true)
    const dir = tempDir()
    const file = writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST))
    const result = await runNode(Effect.either(loadPipeline(file, [Either.getOrThrow(parseOverride("shufled.seed=7"))])))
    expect(Either.isLeft(result) && result.left.message).toContain('p.yaml (did you mean "shuffled"?)')
  })

  it("rejects a plug-in module that exports no stage, naming the path", async () => {
    const dir = tempDir()
    writeFile(dir, "nothing.ts", "export const x = 1\n")
    writeFile(dir, "broken.ts", "export default {\n")
    const file = writeFile(dir, "p.yaml", "stages:\n  a: { uses: ./nothing.ts }\n  b: { uses: ./broken.ts }\n")
    const result = await runNode(Effect.either(loadPipeline(file)))
    const message = Either.isLeft(result) ? result.left.message : ""
    expect(message).toContain("the stage module ./nothing.ts does not export a stage")
    expect(message).toContain("the stage module ./broken.ts failed to load")
  })

  it("rejects a --set that goes through a scalar, a list or an alias as a usage error naming the flag, the key path and what is there", async () => {
    const dir = tempDir()
    const file = writeFile(dir, "p.yaml", `${samplePipeline(GSM8K_TEST)}  scalar: { uses: shuffle, needs: [data], with: 5 }
  listed: { uses: shuffle, needs: [data], with: [1, 2] }
  shared: { uses: shuffle, needs: [data], with: *seed }
`.replace("with: { seed: 42 }", "with: &seed { seed: 42 }"))
    const usageError = async (...flags: ReadonlyArray<string>) => {
      const result = await runNode(Effect.either(loadPipeline(file, flags.map((flag) => Either.getOrThrow(parseOverride(flag))))))
      if (Either.isRight(result)) throw new Error(`expected ${flags.join(" ")} to be refused`)
      expect(result.left._tag).toBe("UsageError")
      return (result.left as UsageError).message
    }
    expect(await usageError("shuffled.seed.x=1")).toBe(
      `--set shuffled.seed.x=1: stages.shuffled.with.seed is a number (42) at ${file}:9:25, not a map, so it has no key "x" to set`
    )
    expect(await usageError("scalar.seed=1")).toBe(
      `--set scalar.seed=1: stages.scalar.with is a number (5) at ${file}:14:49, not a map of params, so it has no key "seed" to set`
    )
    expect(await usageError("listed.seed=1")).toContain(`stages.listed.with is a list at ${file}:15:49, so "seed" is not one of its indices (0 to 1)`)
    expect(await usageError("shared.seed=1")).toContain("stages.shared.with is an alias (*seed)")
    expect(await usageError("shuffled.seed=1", "shuffled.seed.x=2")).toBe(
      "--set shuffled.seed.x=2: stages.shuffled.with.seed is a number (1) at --set shuffled.seed=1, not a map, so it has no key \"x\" to set"
    )
    // A key the flag creates is located at the flag.
    const created = await specErrorOf(samplePipeline(GSM8K_TEST), ["shuffled.splits.x=1"])
    expect(created.message).toContain("--set shuffled.splits.x=1 stages.shuffled.with.splits: expected")
  })

  it("rejects __proto__ as a stage id, a with: key, a nested key and a --set key, each located", async () => {
    const error = await specErrorOf(`stages:
  data: { uses: fetch, with: { path: x.jsonl } }
  __proto__: { uses: shuffle, needs: [data] }
  shuffled: { uses: shuffle, needs: [data], with: { seed: 1, __proto__: { seed: 7 } } }
  cut: { uses: select, needs: [data], with: { rows: { __proto__: 5 } } }
`)
    const lines = error.message.split("\n")
    expect(lines).toEqual([
      expect.stringMatching(/p\.yaml:3:3 stages\.__proto__: invalid stage id "__proto__": JavaScript reserves the name/),
      expect.stringMatching(/p\.yaml:4:62 stages\.shuffled\.with\.__proto__: invalid key "__proto__"/),
      expect.stringMatching(/p\.yaml:5:55 stages\.cut\.with\.rows\.__proto__: invalid key "__proto__"/)
    ])
    const flag = parseOverride("shuffled.__proto__.seed=1")
    expect(Either.isLeft(flag) && flag.left.message).toBe('--set shuffled.__proto__.seed=1: "__proto__" cannot be a key: JavaScript reserves the name (a value under it would be lost); rename it')
    const inValue = await specErrorOf(samplePipeline(GSM8K_TEST), ["shuffled.splits={__proto__: [train]}"])
    expect(inValue.message).toContain('--set shuffled.splits={__proto__: [train]} stages.shuffled.with.splits.__proto__: invalid key "__proto__"')
  })

  it("keeps the stages when only top-level keys are wrong, so that their params can be checked too", async () => {
    const dir = tempDir()
    const file = writeFile(dir, "p.yaml", `name: [1]\nunknown: 1\n${samplePipeline(GSM8K_TEST).replace("name: sample\n", "").replace("{ seed: 42 }", "{ sed: 42 }")}`)
    const { diagnostics, spec } = await runNode(readSpec(file))
    expect(diagnostics.map((d) => `${d.location} ${d.path}`)).toEqual(expect.arrayContaining([`${file}:1:7 name`, `${file}:2:1 unknown`]))
    expect(spec.name).toBe("p")
    expect(spec.stages.map((s) => [s.id, s.with])).toEqual([["data", { path: GSM8K_TEST }], ["shuffled", { sed: 42 }], ["short", { where: "question.length < 400" }]])
    // A malformed `stages:` is still reported at once, with the rest.
    writeFile(dir, "p.yaml", "name: [1]\nstages: { a: { uses: 5 } }\n")
    const broken = await runNode(Effect.flip(readSpec(file)))
    expect(broken.message.split("\n")).toHaveLength(2)
  })
})
