/**
 * Golden-set accuracy. `number` (GSM8K): a generated answer is right when its final
 * number (after `####`, see gsm8k.ts) equals the reference's. `label`
 * (classification): right when the answer's first word is the reference label,
 * ignoring case and punctuation.
 */
import { extractAnswer, isCorrect } from "./gsm8k.ts"

export type Scoring = "number" | "label"

/** A classifier's answer: its first word, lower-cased, without punctuation. */
const extractLabel = (text: string): string | undefined => {
  const word = text.trim().split(/\s+/)[0]?.toLowerCase().replace(/[^\p{L}\p{N}_-]/gu, "")
  return word === undefined || word === "" ? undefined : word
}

export interface ScoredExample {
  readonly question: string
  readonly reference: string
  /** The generated text. */
  readonly prediction: string
  readonly predicted: string | undefined
  readonly expected: string | undefined
  readonly correct: boolean
}

export const scoreExamples = (
  questions: ReadonlyArray<string>,
  references: ReadonlyArray<string>,
  predictions: ReadonlyArray<string>,
  scoring: Scoring = "number"
): ReadonlyArray<ScoredExample> =>
  predictions.map((prediction, i) => {
    const reference = references[i] ?? ""
    const predicted = scoring === "label" ? extractLabel(prediction) : extractAnswer(prediction)
    const expected = scoring === "label" ? extractLabel(reference) : extractAnswer(reference)
    return {
      question: questions[i] ?? "",
      reference,
      prediction,
      predicted,
      expected,
      correct: scoring === "label" ? predicted !== undefined && predicted === expected : isCorrect(prediction, reference)
    }
  })

/** The fraction correct; NaN for no examples. */
export const accuracyOf = (scored: ReadonlyArray<ScoredExample>): number =>
  scored.length === 0 ? Number.NaN : scored.filter((example) => example.correct).length / scored.length
