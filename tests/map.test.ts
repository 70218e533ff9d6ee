/** The `map` stage through the CLI: derived columns, drops, splits, and its errors. */
import { readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"
import { decodeIpc, rowAt } from "../src/arrow.ts"
import { cliInProcess, tempDir, writeFile } from "./helpers.ts"

const REVIEWS = [
  { rating: 5, title: "Love it", content: "Great sound." },
  { rating: 3, title: "Okay", content: "Does the job." },
  { rating: 1, title: "Broke", content: "Died in a week." },
  { rating: 2, title: "Meh", content: "Cheap feel." }
]

/** A pipeline over two splits of reviews, `map` with the given params. */
const pipeline = (mapParams: string): string => {
  const dir = tempDir()
  writeFile(dir, "train.jsonl", REVIEWS.map((r) => JSON.stringify(r)).join("\n"))
  writeFile(dir, "test.jsonl", JSON.stringify({ rating: 4, title: "Good", content: "Works." }))
  return writeFile(dir, "p.yaml", `name: map-test
stages:
  data:
    uses: fetch
    with: { path: { train: train.jsonl, test: test.jsonl } }
  mapped:
    uses: map
    needs: [data]
    with:
${mapParams.replace(/^/gm, "      ")}
`)
}

interface Outcome {
  readonly status: string
  readonly reason: string
  readonly outputs: { readonly dataset: { readonly splits: Record<string, Array<{ path: string }>> } } | null
}

const run = async (file: string) => {
  const result = await cliInProcess(["run", file, "--cache-dir", tempDir(), "--json"])
  const stages = result.stdout.trim() === "" ? [] : (JSON.parse(result.stdout) as { stages: Array<Outcome> }).stages
  return { ...result, mapped: stages[1] }
}

const tableOf = (outcome: Outcome | undefined, split: string) => decodeIpc(readFileSync(outcome!.outputs!.dataset.splits[split]![0]!.path))
const rowsOf = (outcome: Outcome | undefined, split: string) => {
  const table = tableOf(outcome, split)
  return Array.from({ length: table.numRows }, (_, i) => rowAt(table, i))
}

const SENTIMENT = `"rating <= 2 ? 'negative' : rating == 3 ? 'neutral' : 'positive'"`

describe("map", () => {
  it("derives a label from stars and a prompt from a later expression, in order, and drops columns", async () => {
    const result = await run(pipeline(`columns:
  label: ${SENTIMENT}
  review: "'Review: ' + title + '. ' + content + '\\nSentiment (' + label + '?)'"
  stars_x2: "rating * 2"
drop: [title]`))
    expect(result.code, result.stderr).toBe(0)
    const table = tableOf(result.mapped, "train")
    expect(table.schema.fields.map((f) => `${f.name}:${f.type}`)).toEqual(["rating:Int32", "content:Utf8", "label:Utf8", "review:Utf8", "stars_x2:Int32"])
    const rows = rowsOf(result.mapped, "train")
    expect(rows.map((r) => r.label)).toEqual(["positive", "neutral", "negative", "negative"])
    expect(rows[0]!.review).toBe("Review: Love it. Great sound.\nSentiment (positive?)")
    expect(rows.map((r) => r.stars_x2)).toEqual([10, 6, 2, 4])
    expect(rowsOf(result.mapped, "test")[0]!.label).toBe("positive")
    expect(result.stderr).toContain("train: 4 rows, derived label, review, stars_x2, dropped title")
  })

  it("replaces a column in place, and leaves splits it is not given untouched", async () => {
    const result = await run(pipeline(`columns:
  title: "title|upper"
splits: [train]`))
    expect(result.code, result.stderr).toBe(0)
    expect(tableOf(result.mapped, "train").schema.fields.map((f) => f.name)).toEqual(["rating", "title", "content"])
    expect(rowsOf(result.mapped, "train").map((r) => r.title)).toEqual(["LOVE IT", "OKAY", "BROKE", "MEH"])
    expect(rowsOf(result.mapped, "test")[0]!.title).toBe("Good")
  })

  it("checks expressions when the pipeline loads", async () => {
    const result = await cliInProcess(["dag", pipeline(`columns:
  label: "rating <= ? 'a'"`)])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/p\.yaml:\d+:\d+ stages\.mapped\.with\.columns\.label: invalid expression: Token \?/)
    const both = await cliInProcess(["dag", pipeline(`columns:
  other: "rating"
drop: [other]`)])
    expect(both.stderr).toContain(`"other" is both derived and dropped`)
    const empty = await cliInProcess(["dag", pipeline("splits: [train]")])
    expect(empty.stderr).toContain("give `columns` to derive, `drop`, or both")
  })

  it("names a column an expression reads that the split does not have", async () => {
    const typo = await run(pipeline(`columns:
  label: "ratng <= 2 ? 'negative' : 'positive'"`))
    expect(typo.code).toBe(1)
    expect(typo.stderr).toContain(`columns.label reads "ratng", which split "train" does not have (columns: rating, title, content)`)
    const drop = await run(pipeline("drop: [author]"))
    expect(drop.stderr).toContain(`drop: split "train" has no column "author" (columns: rating, title, content)`)
  })

  it("reports values of mixed types by column and row", async () => {
    const result = await run(pipeline(`columns:
  label: "rating > 2 ? 'good' : rating"`))
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(`split "train": row 3: column "label" mixes types: string in earlier rows, integer here`)
  })
})
