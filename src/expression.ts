/**
 * The row expression language of `filter: { where: ... }` and `map: { columns: ... }`:
 * Jexl, an interpreted expression language (no `eval`, no access to prototypes or
 * globals). A row's columns are its variables: `question.length < 400 && answer != ""`.
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
export const compilePredicate = (source: string): Either.Either<RowPredicate, string> =>
  Either.map(compileExpression(source), ({ evaluate }) => (row) => Boolean(evaluate(row)))

/** An expression whose value is kept (`map`'s derived columns), and the row variables it reads. */
export interface RowExpression {
  readonly evaluate: (row: Record<string, unknown>) => unknown
  /** Top-level names read (`rating` in `rating.x > 2`): the columns the row must have. */
  readonly names: ReadonlyArray<string>
}

/** Compiles an expression that yields a value, or says why it does not parse. */
export const compileExpression = (source: string): Either.Either<RowExpression, string> => {
  try {
    const expression = jexl.compile(source)
    const names = new Set<string>()
    collectNames(expression._getAst(), names)
    return Either.right({ evaluate: (row) => expression.evalSync(row) as unknown, names: [...names] })
  } catch (error) {
    return Either.left((error as Error).message)
  }
}

/** Identifiers with no `from` (not `b` in `a.b`) and not relative (`.x` inside a filter) name row variables. */
const collectNames = (node: unknown, names: Set<string>): void => {
  if (typeof node !== "object" || node === null) return
  const n = node as { type?: unknown; value?: unknown; from?: unknown; relative?: unknown }
  if (n.type === "Identifier" && n.from === undefined && n.relative !== true && typeof n.value === "string") names.add(n.value)
  for (const child of Object.values(node)) collectNames(child, names)
}
