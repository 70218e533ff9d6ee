/**
 * Prompt templates: `Question: {question}\nAnswer:` builds a prompt from a row's
 * columns. Shared by tokenize, evaluate and generate, so a model is prompted the
 * way it was trained.
 */
import { Either } from "effect"

export type TemplatePart = { readonly literal: string } | { readonly column: string }

/** Splits `Question: {question}\nAnswer:` into text and column names; `{{` and `}}` are literal braces. */
export const parseTemplate = (source: string): Either.Either<ReadonlyArray<TemplatePart>, string> => {
  const parts: Array<TemplatePart> = []
  let literal = ""
  for (let i = 0; i < source.length; i++) {
    const char = source[i]!
    if ((char === "{" || char === "}") && source[i + 1] === char) {
      literal += char
      i++
    } else if (char === "}") {
      return Either.left(`unmatched "}" at character ${i + 1} (write "}}" for a literal brace)`)
    } else if (char === "{") {
      const end = source.indexOf("}", i)
      const column = end === -1 ? "" : source.slice(i + 1, end).trim()
      if (end === -1 || column === "" || column.includes("{")) {
        return Either.left(`"{" at character ${i + 1} does not open a placeholder such as {question} (write "{{" for a literal brace)`)
      }
      if (literal !== "") parts.push({ literal })
      literal = ""
      parts.push({ column })
      i = end
    } else {
      literal += char
    }
  }
  if (literal !== "") parts.push({ literal })
  return parts.some((part) => "column" in part)
    ? Either.right(parts)
    : Either.left("the template names no column: write placeholders such as {question}")
}
