/**
 * GSM8K's golden-set scoring: the final answer is the number after `####`.
 * Model output is messier than the references, so extraction tolerates thousands
 * separators, a currency sign, trailing periods and text after the number, and
 * falls back to the last number in the text when no `####` line was produced.
 */
const NUMBER = /-?\$?\s*\d[\d,]*(?:\.\d+)?/

/** The final numeric answer in `text`, normalised (`1,234.50` → `1234.5`), or undefined. */
export const extractAnswer = (text: string): string | undefined => {
  const marked = /####\s*([^\n]*)/.exec(text)
  const source = marked ? marked[1]! : undefined
  const match = source !== undefined ? NUMBER.exec(source) : lastNumber(text)
  return match === undefined || match === null ? undefined : normalise(match[0])
}

const lastNumber = (text: string): RegExpExecArray | undefined => {
  let last: RegExpExecArray | undefined
  const all = new RegExp(NUMBER.source, "g")
  for (let m = all.exec(text); m !== null; m = all.exec(text)) last = m
  return last
}

const normalise = (raw: string): string => {
  const cleaned = raw.replace(/[$,\s]/g, "")
  const value = Number(cleaned)
  return Number.isFinite(value) ? String(value) : cleaned
}

/** Whether a generated answer's final number equals the reference's. */
export const isCorrect = (generated: string, reference: string): boolean => {
  const predicted = extractAnswer(generated)
  return predicted !== undefined && predicted === extractAnswer(reference)
}
