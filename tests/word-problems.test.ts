import { describe, expect, it } from "vitest"
import { cliInProcess, tempDir, writeFile } from "./helpers.ts"

const rowsOf = async (yaml: string, split: string) => {
  const dir = tempDir()
  const cache = tempDir()
  const file = writeFile(dir, "p.yaml", yaml)
  expect((await cliInProcess(["run", file, "--cache-dir", cache])).code).toBe(0)
  const shown = await cliInProcess(["show", file, "data", "--split", split, "--limit", "100000", "--format", "jsonl", "--cache-dir", cache])
  return shown.stdout.trim().split("\n").map((line) => JSON.parse(line) as { question: string; answer: string })
}

const pipeline = (seed: number) => `stages:\n  data: { uses: word-problems, with: { seed: ${seed}, splits: { train: 300, test: 50 } } }\n`

describe("word-problems", () => {
  it("is deterministic per seed, keeps test questions out of train, and its answers are right", async () => {
    const train = await rowsOf(pipeline(3), "train")
    const test = await rowsOf(pipeline(3), "test")
    expect(train).toHaveLength(300)
    expect(test).toHaveLength(50)
    expect(await rowsOf(pipeline(3), "train")).toEqual(train)
    expect((await rowsOf(pipeline(4), "train"))[0]).not.toEqual(train[0])
    const trainQuestions = new Set(train.map((r) => r.question))
    expect(test.filter((r) => trainQuestions.has(r.question))).toEqual([])
    for (const { answer } of [...train, ...test]) {
      // Every <<a op b = c>> annotation is correct arithmetic, and the final line repeats the last result.
      const steps = [...answer.matchAll(/<<(\d+)([-+*])(\d+)=(\d+)>>/g)]
      expect(steps.length).toBeGreaterThan(0)
      for (const [, a, op, b, c] of steps) {
        const value = op === "+" ? Number(a) + Number(b) : op === "-" ? Number(a) - Number(b) : Number(a) * Number(b)
        expect(value).toBe(Number(c))
      }
      expect(answer.endsWith(`#### ${steps.at(-1)![4]}`)).toBe(true)
    }
  })
})
