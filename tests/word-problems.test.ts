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

  it("with pairs: the worked answer as chosen, and as rejected the same working with its last step off by 1 to 3", async () => {
    const dir = tempDir()
    const cache = tempDir()
    const file = writeFile(dir, "p.yaml", "stages:\n  data: { uses: word-problems, with: { seed: 3, splits: { train: 200 }, pairs: true } }\n")
    expect((await cliInProcess(["run", file, "--cache-dir", cache])).code).toBe(0)
    const shown = await cliInProcess(["show", file, "data", "--limit", "1000", "--format", "jsonl", "--cache-dir", cache])
    const rows = shown.stdout.trim().split("\n").map((line) => JSON.parse(line) as { prompt: string; chosen: string; rejected: string })
    expect(rows).toHaveLength(200)
    const steps = (text: string) => [...text.matchAll(/<<(\d+)([-+*])(\d+)=(\d+)>>/g)]
    let below = 0
    for (const { prompt, chosen, rejected } of rows) {
      expect(prompt).toMatch(/\?$/)
      const right = steps(chosen)
      const wrong = steps(rejected)
      expect(wrong.length).toBe(right.length)
      // Every step but the last is the same; the last result is off by 1 to 3, and the final line follows it.
      expect(wrong.slice(0, -1).map((m) => m[0])).toEqual(right.slice(0, -1).map((m) => m[0]))
      const off = Number(wrong.at(-1)![4]) - Number(right.at(-1)![4])
      expect([-3, -2, -1, 1, 2, 3]).toContain(off)
      if (off < 0) below++
      expect(Number(wrong.at(-1)![4])).toBeGreaterThanOrEqual(0)
      expect(rejected.endsWith(`#### ${wrong.at(-1)![4]}`)).toBe(true)
      expect(chosen.endsWith(`#### ${right.at(-1)![4]}`)).toBe(true)
    }
    expect(below).toBeGreaterThan(20)
  })
})
