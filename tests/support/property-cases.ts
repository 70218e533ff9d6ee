/**
 * The property test's cases: valid pipeline files (over data.jsonl and other.csv in the
 * test's folder), mutated one to three times. A case depends only on fast-check's seed,
 * so that PROPERTY_SEED replays a run.
 */
import fc from "fast-check"
import { samplePipeline } from "../helpers.ts"

export const BASES = [
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

export const mutation: fc.Arbitrary<Mutation> = fc.oneof(
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

/** A pipeline file: a base mutated one to three times. */
export const mutatedPipeline: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom(...BASES), fc.array(mutation, { minLength: 1, maxLength: 3 }))
  .map(([base, mutations]) => mutations.reduce((t, m) => m(t), base))

/**
 * The seed of a run: PROPERTY_SEED when set (it must be an integer fast-check accepts),
 * else a new one. Printed by the test, so that any run can be replayed.
 */
export const propertySeed = (env: NodeJS.ProcessEnv, now = Date.now()): number => {
  const given = env.PROPERTY_SEED
  if (given === undefined || given === "") return now % 2 ** 31
  const seed = Number(given)
  if (!/^-?\d+$/.test(given.trim()) || !Number.isSafeInteger(seed) || seed < -(2 ** 31) || seed >= 2 ** 31) {
    throw new Error(`PROPERTY_SEED must be an integer from -2147483648 to 2147483647 (a seed the property test printed), got "${given}"`)
  }
  return seed
}
