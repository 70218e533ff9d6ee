/**
 * A generated corpus for the stream case: JSON lines of plain documents (`{"id", "text"}`)
 * up to a size in MB, the shape of a continued pre-training corpus. Words are drawn
 * from a fixed made-up vocabulary with a Zipf-like skew, as in natural text, so that
 * the tokenizer meets the mix of frequent and rare words it would there. Seeded: the
 * same size gives the same file.
 *
 *   node --import tsx bench/cases/stream-corpus.ts --out corpus.jsonl --mb 3000
 * prints {"bytes": …, "documents": …} when done.
 */
import { closeSync, openSync, writeSync } from "node:fs"
import { parseArgs } from "node:util"
import { splitMix } from "./measure.ts"

const { values } = parseArgs({ options: { out: { type: "string" }, mb: { type: "string", default: "3000" } } })
if (values.out === undefined) throw new Error("--out FILE is required")
const target = Number(values.mb) * 1e6
if (!(target > 0)) throw new Error(`--mb ${values.mb}: expected a positive number`)

const random = splitMix(2024)
const SYLLABLES = ["ka", "to", "ri", "men", "sa", "lo", "ver", "ni", "dus", "ap", "el", "qu", "or", "ban", "te", "shi", "mo", "ga", "lin", "pe"]
const vocabulary = Array.from({ length: 30_000 }, () =>
  Array.from({ length: 1 + Math.floor(random() * 4) }, () => SYLLABLES[Math.floor(random() * SYLLABLES.length)]!).join(""))
/** Rank V^u: P(rank) ∝ 1/rank, Zipf's law with exponent 1. */
const word = (): string => vocabulary[Math.min(vocabulary.length - 1, Math.floor(vocabulary.length ** random()) - 1)]!

const sentence = (): string => {
  const words = Array.from({ length: 5 + Math.floor(random() * 20) }, word)
  const first = words[0]!
  words[0] = first.charAt(0).toUpperCase() + first.slice(1)
  return `${words.join(" ")}${random() < 0.1 ? "?" : "."}`
}

const fd = openSync(values.out, "w")
let bytes = 0
let documents = 0
let pending: Array<string> = []
let pendingBytes = 0
while (bytes + pendingBytes < target) {
  const paragraphs = Array.from({ length: 1 + Math.floor(random() * 6) }, () => Array.from({ length: 2 + Math.floor(random() * 6) }, sentence).join(" "))
  const line = `${JSON.stringify({ id: documents, text: paragraphs.join("\n\n") })}\n`
  documents++
  pending.push(line)
  pendingBytes += Buffer.byteLength(line)
  if (pendingBytes > 8e6) {
    bytes += writeSync(fd, pending.join(""))
    pending = []
    pendingBytes = 0
  }
}
bytes += writeSync(fd, pending.join(""))
closeSync(fd)
console.log(JSON.stringify({ bytes, documents }))
