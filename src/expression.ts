/**
 * The row expression language of `filter: { where: ... }`: Jexl, an interpreted
 * expression language (no `eval`, no access to prototypes or globals). A row's
 * columns are its variables: `question.length < 400 && answer != ""`.
 */
import { Either } from "effect"
import { Jexl } from "jexl"

const jexl = new Jexl()
const lengthOf = (value: unknown): number =>
  value === null || value === undefined ? 0 : typeof value === "string" || Array.isArray(value) ? value.length : Number((value as { length?: number }).length ?? 0)
jexl.addTransform("len", lengthOf)
jexl.addTransform("lower", (value: unknown) => String(value ?? "").toLowerCase())
jexl.addTransform("upper", (value: unknown) => String(value ?? "").toUpperCase())
jexl.addTransform("trim", (value: unknown) => String(value ?? "").trim())
jexl.addFunction("contains", (haystack: unknown, needle: unknown) => String(haystack ?? "").includes(String(needle)))

export type RowPredicate = (row: Record<string, unknown>) => boolean

/** Compiles an expression, or says why it does not parse. */
export const compilePredicate = (source: string): Either.Either<RowPredicate, string> => {
  try {
    const expression = jexl.compile(source)
    return Either.right((row) => Boolean(expression.evalSync(row)))
  } catch (error) {
    return Either.left((error as Error).message)
  }
}
