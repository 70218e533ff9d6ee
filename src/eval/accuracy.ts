/**
 * Golden-set accuracy, GSM8K style: a generated answer is right when its final number
 * (after `####`, see gsm8k.ts) equals the reference's.
 */
import { extractAnswer, isCorrect } from "./gsm8k.ts"

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
  predictions: ReadonlyArray<string>
): ReadonlyArray<ScoredExample> =>
  predictions.map((prediction, i) => {
    const reference = references[i] ?? ""
    return {
      question: questions[i] ?? "",
      reference,
      prediction,
      predicted: extractAnswer(prediction),
      expected: extractAnswer(reference),
      correct: isCorrect(prediction, reference)
    }
  })

/** The fraction correct; NaN for no examples. */
export const accuracyOf = (scored: ReadonlyArray<ScoredExample>): number =>
  scored.length === 0 ? Number.NaN : scored.filter((example) => example.correct).length / scored.length
