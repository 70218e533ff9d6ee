/**
 * `word-problems`: a seeded generator of GSM8K-style word problems with worked
 * answers in GSM8K's own format (`<<3+4=7>>` calculator annotations, a final
 * `#### N` line). The offline quickstart trains on it: no network, no download,
 * and easy enough that a tiny model learns it in minutes. With `pairs`, it writes
 * preference pairs for `dpo` instead: the question as `prompt`, the worked answer as
 * `chosen`, and as `rejected` the same working with a slip in its last step (a result
 * off by 1 to 3, carried to the final line).
 */
import { Table, Utf8, vectorFromArray } from "apache-arrow"
import { Effect, Schema } from "effect"
import { writeDataset } from "../src/dataset.ts"
import { Pcg64, randomInterval } from "../src/random.ts"
import { defineStage } from "../src/stage.ts"

const KINDS = ["add", "subtract", "multiply", "two_step"] as const
type Kind = (typeof KINDS)[number]

const NAMES = ["Ava", "Ben", "Chloe", "Dan", "Ella", "Finn", "Grace", "Hugo", "Iris", "Jack", "Kate", "Leo", "Mia", "Noah", "Olivia", "Sam"]
const ITEMS = ["apples", "pencils", "marbles", "stickers", "books", "cookies", "shells", "cards", "stamps", "coins"]
const FRIENDS = ["a friend", "her brother", "his sister", "a neighbour", "the teacher"]

interface Problem {
  readonly question: string
  readonly answer: string
  /** The same working with the last step's result replaced. */
  readonly withResult: (result: number) => string
  readonly result: number
}

class Draw {
  constructor(private readonly rng: Pcg64) {}
  /** An integer in [low, high]. */
  int(low: number, high: number): number {
    return low + Number(randomInterval(this.rng, BigInt(high - low)))
  }
  pick<T>(items: ReadonlyArray<T>): T {
    return items[this.int(0, items.length - 1)]!
  }
}

const calc = (a: number, op: string, b: number, c: number) => `${a} ${op} ${b} = <<${a}${op}${b}=${c}>>${c}`

const make = (kind: Kind, draw: Draw, max: number): Problem => {
  const name = draw.pick(NAMES)
  const items = draw.pick(ITEMS)
  switch (kind) {
    case "add": {
      const a = draw.int(1, max)
      const b = draw.int(1, max)
      const withResult = (r: number) => `${name} has ${calc(a, "+", b, r)} ${items} now.\n#### ${r}`
      return {
        question: `${name} has ${a} ${items}. ${name} gets ${b} more ${items}. How many ${items} does ${name} have now?`,
        answer: withResult(a + b),
        withResult,
        result: a + b
      }
    }
    case "subtract": {
      const a = draw.int(2, max)
      const b = draw.int(1, a - 1)
      const withResult = (r: number) => `${name} has ${calc(a, "-", b, r)} ${items} left.\n#### ${r}`
      return {
        question: `${name} had ${a} ${items} and gave ${b} of them to ${draw.pick(FRIENDS)}. How many ${items} does ${name} have left?`,
        answer: withResult(a - b),
        withResult,
        result: a - b
      }
    }
    case "multiply": {
      const a = draw.int(2, Math.max(2, Math.min(max, 9)))
      const b = draw.int(2, Math.max(2, Math.min(max, 9)))
      const withResult = (r: number) => `${name} buys ${calc(a, "*", b, r)} ${items}.\n#### ${r}`
      return {
        question: `${name} buys ${a} bags with ${b} ${items} in each bag. How many ${items} does ${name} buy?`,
        answer: withResult(a * b),
        withResult,
        result: a * b
      }
    }
    case "two_step": {
      const a = draw.int(1, max)
      const b = draw.int(1, max)
      const c = draw.int(1, a + b)
      const withResult = (r: number) => `${name} had ${calc(a, "+", b, a + b)} ${items}.\nAfter giving some away, ${calc(a + b, "-", c, r)} are left.\n#### ${r}`
      return {
        question: `${name} has ${a} ${items} and finds ${b} more. Then ${name} gives away ${c}. How many ${items} are left?`,
        answer: withResult(a + b - c),
        withResult,
        result: a + b - c
      }
    }
  }
}

const Count = Schema.Int.pipe(Schema.nonNegative())

export default defineStage({
  name: "word-problems",
  version: "1",
  description: "Generates GSM8K-style word problems with worked answers ending in `#### N` (offline, seeded)",
  params: Schema.Struct({
    splits: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Count }), { default: () => ({ train: 2000, test: 200 }) })
      .annotations({ description: "Rows per split; later splits never repeat a question of an earlier one" }),
    seed: Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { default: () => 0 }),
    max_operand: Schema.optionalWith(Schema.Int.pipe(Schema.between(2, 1000)), { default: () => 20 })
      .annotations({ description: "The largest number in a question" }),
    kinds: Schema.optionalWith(Schema.Array(Schema.Literal(...KINDS)).pipe(Schema.minItems(1)), { default: () => [...KINDS] }),
    pairs: Schema.optionalWith(Schema.Boolean, { default: () => false })
      .annotations({ description: "Write preference pairs for dpo (prompt, chosen, rejected: a slip in the last step) instead of question and answer" })
  }),
  accepts: { kinds: [], min: 0, max: 0 },
  produces: ["dataset"],
  run: (ctx) =>
    Effect.gen(function* () {
      const { seed, max_operand, kinds, pairs } = ctx.params
      const draw = new Draw(Pcg64.fromSeed(seed))
      const seen = new Set<string>()
      const splits: Record<string, Table> = {}
      for (const [split, count] of Object.entries(ctx.params.splits)) {
        const questions: Array<string> = []
        const answers: Array<string> = []
        const slips: Array<string> = []
        // Bounded: a small operand range can run out of distinct problems.
        for (let attempts = 0; questions.length < count && attempts < count * 50; attempts++) {
          const problem = make(draw.pick(kinds), draw, max_operand)
          if (seen.has(problem.question)) continue
          seen.add(problem.question)
          questions.push(problem.question)
          answers.push(problem.answer)
          if (pairs) {
            // Off by 1 to 3, never below 0 (drawn only for pairs: question-and-answer output is unchanged).
            const off = draw.int(1, 3) * (problem.result >= 3 && draw.int(0, 1) === 0 ? -1 : 1)
            slips.push(problem.withResult(problem.result + off))
          }
        }
        if (questions.length < count) {
          yield* ctx.log(`${split}: only ${questions.length} distinct problems with max_operand ${max_operand}`)
        }
        splits[split] = pairs
          ? new Table({ prompt: vectorFromArray(questions, new Utf8()), chosen: vectorFromArray(answers, new Utf8()), rejected: vectorFromArray(slips, new Utf8()) })
          : new Table({ question: vectorFromArray(questions, new Utf8()), answer: vectorFromArray(answers, new Utf8()) })
      }
      return { outputs: { dataset: yield* writeDataset(ctx.outDir, splits) } }
    })
})
