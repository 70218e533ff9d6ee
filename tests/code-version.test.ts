/**
 * What a stage's code version covers (src/code-version.ts): its module's import closure
 * by content, worker scripts loaded by URL, and packages by version; the memo of import
 * graphs never hides an edit.
 */
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { closureHash, codeClosures } from "../src/code-version.ts"
import { REPO, tempDir, writeFile } from "./helpers.ts"

const project = () => {
  const dir = tempDir()
  const stage = writeFile(dir, "stages/s.ts", `import { helper } from "../lib/helper.ts"\nimport { Effect } from "effect"\nexport const s = () => Effect.succeed(helper())\nexport const worker = new URL("../lib/worker.mjs", import.meta.url)\n`)
  writeFile(dir, "lib/helper.ts", `export const helper = () => 1\n`)
  writeFile(dir, "lib/worker.mjs", `import { deep } from "./deep.mjs"\nconsole.log(deep)\n`)
  writeFile(dir, "lib/deep.mjs", `export const deep = 2\n`)
  writeFile(dir, "lib/unused.ts", `export const unused = 3\n`)
  // Packages resolve from the stage's folder upwards: point node_modules at this checkout's.
  writeFileSync(join(dir, "package.json"), "{}")
  return { dir, stage }
}

describe("code versions", () => {
  it("cover the module's imports, what it loads by URL and their imports, and packages by version; nothing else", async () => {
    const { stage } = project()
    const closure = (await codeClosures([stage])).get(stage)!
    expect(Object.keys(closure.files)).toEqual(["../lib/deep.mjs", "../lib/helper.ts", "../lib/worker.mjs", "s.ts"])
    expect(Object.keys(closure.packages)).toEqual(["effect"])
  })

  it("the built-in shuffle stage covers src/random.ts, and tokenize its worker", async () => {
    const shuffle = join(REPO, "stages/shuffle.ts")
    const tokenize = join(REPO, "stages/tokenize.ts")
    const closures = await codeClosures([shuffle, tokenize])
    expect(Object.keys(closures.get(shuffle)!.files)).toContain("../src/random.ts")
    expect(Object.keys(closures.get(tokenize)!.files)).toEqual(expect.arrayContaining(["../src/tokenizer/encode-worker.mjs", "../src/tokenizer/word-memo.mjs"]))
    expect(closures.get(shuffle)!.packages["apache-arrow"]).toMatch(/^\d+\.\d+\.\d+/)
  })

  it("an edit anywhere in the closure changes the hash, a new import is followed, and the memo file never hides either", async () => {
    const { dir, stage } = project()
    const memo = join(dir, "code-graphs.json")
    const before = (await codeClosures([stage], memo)).get(stage)!
    expect(closureHash((await codeClosures([stage], memo)).get(stage)!)).toBe(closureHash(before))

    writeFile(dir, "lib/deep.mjs", `export const deep = 3\n`)
    const edited = (await codeClosures([stage], memo)).get(stage)!
    expect(closureHash(edited)).not.toBe(closureHash(before))
    expect(edited.files["../lib/deep.mjs"]).not.toBe(before.files["../lib/deep.mjs"])

    writeFile(dir, "lib/helper.ts", `import { unused } from "./unused.ts"\nexport const helper = () => unused\n`)
    expect(Object.keys((await codeClosures([stage], memo)).get(stage)!.files)).toContain("../lib/unused.ts")

    // A damaged memo is not used.
    writeFileSync(memo, "{ garbage")
    writeFile(dir, "lib/unused.ts", `export const unused = 4\n`)
    const again = (await codeClosures([stage], memo)).get(stage)!
    expect(again.files["../lib/unused.ts"]).toBeDefined()
  })
})
