/**
 * Random mutations of valid pipeline files. Every case must end cleanly: exit 0,
 * or exit 1 or 2 with a clear message (located in the file when the file is at
 * fault). None may end in a stack trace, an internal error or a hang.
 */
import fc from "fast-check"
import { readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"
import { cliInProcess, GSM8K_TEST, samplePipeline, tempDir, writeFile } from "./helpers.ts"

const dir = tempDir()
const cache = tempDir()
writeFile(dir, "data.jsonl", readFileSync(GSM8K_TEST, "utf8").split("\n").slice(0, 20).join("\n") + "\n")
writeFile(dir, "other.csv", "question,answer\nWhat is 2+2?,4\nWhat is 3+3?,6\n")

const BASES = [
  samplePipeline("data.jsonl"),
  `stages:
  a:
    uses: fetch
    with:
      path: { train: data.jsonl, test: other.csv }
  b:
    uses: select
    needs: a
    with:
      rows: { train: 5 }
      offset: 1
  c:
    uses: filter
    needs: [b]
    with:
      max_length: { column: question, max: 300 }
      non_empty: [answer]
      splits: [train]
  d:
    uses: shuffle
    needs: [c]
    with: { seed: 7, splits: [test] }
`
]

const TOKENS = ["fetch", "shuffle", "filter", "select", "seed", "needs", "uses", "with", "data", "shuffled", "short", "a", "b", "c",
  "-1", "3.5", "true", "null", "[]", "{}", "''", "x", "path", "rows", "where", "splits", "train", "9999999999", "question.length >", "./x.ts"]
const CHARS = [":", "{", "}", "[", "]", "-", "#", "'", '"', "\n", " ", ",", "a", "1", ".", "|", ">", "&", "*", "!", "%", "@", "`", "\t"]

type Mutation = (text: string) => string

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.nat().map((at): Mutation => (t) => t.slice(0, at % (t.length + 1)) + t.slice((at % (t.length + 1)) + 1)),
  fc.tuple(fc.nat(), fc.constantFrom(...CHARS)).map(([at, ch]): Mutation => (t) => t.slice(0, at % (t.length + 1)) + ch + t.slice(at % (t.length + 1))),
  fc.nat().map((i): Mutation => (t) => {
    const lines = t.split("\n")
    lines.splice(i % lines.length, 1)
    return lines.join("\n")
  }),
  fc.nat().map((i): Mutation => (t) => {
    const lines = t.split("\n")
    lines.splice(i % lines.length, 0, lines[i % lines.length]!)
    return lines.join("\n")
  }),
  fc.tuple(fc.nat(), fc.nat()).map(([i, j]): Mutation => (t) => {
    const lines = t.split("\n")
    const a = i % lines.length
    const b = j % lines.length
    ;[lines[a], lines[b]] = [lines[b]!, lines[a]!]
    return lines.join("\n")
  }),
  fc.tuple(fc.nat(), fc.constantFrom(...TOKENS)).map(([i, token]): Mutation => (t) => {
    const words = [...t.matchAll(/[A-Za-z_][A-Za-z0-9_.]*|\d+/g)]
    if (words.length === 0) return t
    const word = words[i % words.length]!
    return t.slice(0, word.index) + token + t.slice(word.index! + word[0].length)
  }),
  fc.tuple(fc.nat(), fc.boolean()).map(([i, deeper]): Mutation => (t) => {
    const lines = t.split("\n")
    const k = i % lines.length
    lines[k] = deeper ? `  ${lines[k]}` : lines[k]!.replace(/^ {1,2}/, "")
    return lines.join("\n")
  })
)

let counter = 0

/** Reproduce a failure with PROPERTY_SEED=<the seed printed> (and PROPERTY_RUNS to run more or fewer cases). */
const SEED = process.env.PROPERTY_SEED !== undefined ? Number(process.env.PROPERTY_SEED) : Date.now() % 2 ** 31
if (!Number.isSafeInteger(SEED)) throw new Error(`PROPERTY_SEED must be an integer, got ${process.env.PROPERTY_SEED}`)
console.info(`property test: seed ${SEED} (PROPERTY_SEED=${SEED} npx vitest run tests/property.test.ts reproduces this run)`)

describe("mutated pipeline files", () => {
  it("always end in a clean outcome", async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...BASES), fc.array(mutation, { minLength: 1, maxLength: 3 }), async (base, mutations) => {
        const text = mutations.reduce((t, m) => m(t), base)
        const file = writeFile(dir, `case-${counter++ % 50}.yaml`, text)
        const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`hang on:\n${text}`)), 20_000))
        const { code, stderr } = await Promise.race([cliInProcess(["run", file, "--cache-dir", cache]), timeout])
        const context = `\n--- file ---\n${text}\n--- stderr ---\n${stderr}`
        expect([0, 1, 2], context).toContain(code)
        expect(stderr, context).not.toMatch(/\n\s+at .*:\d+/)
        expect(stderr, context).not.toContain("internal error")
        if (code === 2) {
          // The file is at fault: the message says where.
          expect(stderr, context).toMatch(/error: .*case-\d+\.yaml(:\d+:\d+)?[ :]/)
        }
        if (code === 1) expect(stderr, context).toMatch(/✖ \w[\w-]*: failed: \S/)
      }),
      { numRuns: Number(process.env.PROPERTY_RUNS ?? 2000), seed: SEED }
    )
  }, 600_000)
})
