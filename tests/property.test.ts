/**
 * Random mutations of valid pipeline files. Every case must end cleanly: exit 0,
 * or exit 1 or 2 with a clear message (located in the file when the file is at
 * fault). None may end in a stack trace, an internal error or a hang.
 */
import fc from "fast-check"
import { readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"
import { cliInProcess, GSM8K_TEST, tempDir, writeFile } from "./helpers.ts"
import { mutatedPipeline, propertySeed } from "./support/property-cases.ts"

const dir = tempDir()
const cache = tempDir()
writeFile(dir, "data.jsonl", readFileSync(GSM8K_TEST, "utf8").split("\n").slice(0, 20).join("\n") + "\n")
writeFile(dir, "other.csv", "question,answer\nWhat is 2+2?,4\nWhat is 3+3?,6\n")

let counter = 0

/** Reproduce a failure with PROPERTY_SEED=<the seed printed> (and PROPERTY_RUNS to run more or fewer cases). */
const SEED = propertySeed(process.env)
console.info(`property test: seed ${SEED} (PROPERTY_SEED=${SEED} npx vitest run tests/property.test.ts reproduces this run)`)

describe("mutated pipeline files", () => {
  it("always end in a clean outcome", async () => {
    await fc.assert(
      fc.asyncProperty(mutatedPipeline, async (text) => {
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
