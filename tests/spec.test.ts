import { Effect, Either } from "effect"
import { describe, expect, it } from "vitest"
import type { SpecError } from "../src/errors.ts"
import { loadPipeline } from "../src/pipeline.ts"
import { parseOverride } from "../src/spec.ts"
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
    expect(pipeline.stages[1]!.params).toEqual({ seed: 42 })
  })

  it("reports YAML syntax errors with line and column", async () => {
    const error = await specErrorOf("stages:\n  a: {uses: fetch\n  b: [\n")
    expect(error._tag).toBe("SpecError")
    expect(error.message).toMatch(/(^|\/)p\.yaml:\d+:\d+: /m)
    expect(error.message).toMatch(/Flow map/)
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
    expect(pipeline.stages.find((s) => s.id === "shuffled")!.params).toEqual({ seed: 7 })
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
})
