/**
 * The row expression language of `filter: { where: ... }` and `map: { columns: ... }`:
 * Jexl, an interpreted expression language (no `eval`, no access to prototypes or
 * globals). A row's columns are its variables: `question.length < 400 && answer != ""`.
 */
import { Either } from "effect"
import { Jexl } from "jexl"

const jexl = new Jexl()
// Jexl looks names up in these tables with `table[name]`: on plain objects, `constructor` or
// `toString` would be found on Object.prototype and taken for an operator, a transform or a
// function (`constructor` would not parse as a column name). Without a prototype, only what
// is added here is found.
// (@types/jexl calls the transforms table `transform`; jexl's is `transforms`.)
const grammar = jexl._grammar as unknown as Readonly<Record<"elements" | "functions" | "transforms", object>>
for (const table of [grammar.elements, grammar.functions, grammar.transforms]) Object.setPrototypeOf(table, null)
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

/**
 * Deeper expressions are refused: Jexl evaluates recursively, and a few thousand levels
 * (`a+a+a+…`, `!!!…a`) overflow the call stack while a stage runs.
 */
export const MAX_EXPRESSION_DEPTH = 256

const tooDeep = `the expression nests more than ${MAX_EXPRESSION_DEPTH} levels deep (operators or brackets inside each other); split it into map columns`

/** The deepest nesting of (), [] and {} outside string literals. */
const bracketDepth = (source: string): number => {
  let depth = 0
  let deepest = 0
  let quote: string | undefined
  for (let i = 0; i < source.length; i++) {
    const char = source[i]!
    if (quote !== undefined) {
      if (char === "\\") i++
      else if (char === quote) quote = undefined
    } else if (char === "'" || char === "\"") {
      quote = char
    } else if (char === "(" || char === "[" || char === "{") {
      deepest = Math.max(deepest, ++depth)
    } else if (char === ")" || char === "]" || char === "}") {
      depth--
    }
  }
  return deepest
}

/** A name that no column can have: the data readers refuse it (a plain object would lose it). */
const RESERVED_NAME = "__proto__"

/** Compiles an expression that yields a value, or says why it does not parse. */
export const compileExpression = (source: string): Either.Either<RowExpression, string> => {
  // Checked before Jexl sees it: Jexl's parser takes time quadratic in bracket depth, then overflows.
  if (bracketDepth(source) > MAX_EXPRESSION_DEPTH) return Either.left(tooDeep)
  try {
    const expression = jexl.compile(source)
    const read = readNames(expression._getAst())
    if (read.depth > MAX_EXPRESSION_DEPTH) return Either.left(tooDeep)
    if (read.names.has(RESERVED_NAME) || read.properties.has(RESERVED_NAME)) {
      return Either.left(`"${RESERVED_NAME}" cannot name a column, a property or a key: JavaScript reserves the name`)
    }
    const unknown = read.calls.find((call) => !(call.name in grammar[call.pool]))
    if (unknown !== undefined) {
      const known = Object.keys(grammar[unknown.pool]).join(", ")
      return Either.left(`unknown ${unknown.pool === "transforms" ? "transform" : "function"} "${unknown.name}" (${unknown.pool}: ${known})`)
    }
    // The row is read through a copy without a prototype: a name that is not a column is
    // undefined, not a member of Object.prototype (`toString`, `constructor`).
    return Either.right({ evaluate: (row) => expression.evalSync(Object.assign(Object.create(null), row)) as unknown, names: [...read.names] })
  } catch (error) {
    const message = (error as Error).message
    return Either.left(error instanceof RangeError ? `the expression is nested too deeply to parse (${message})` : message)
  }
}

/**
 * Identifiers with no `from` (not `b` in `a.b`) and not relative (`.x` inside a filter)
 * name row variables; the others are properties. Walked with a stack of its own, as the
 * tree may be deeper than the call stack allows.
 */
const readNames = (ast: unknown) => {
  const names = new Set<string>()
  const properties = new Set<string>()
  const calls: Array<{ readonly name: string; readonly pool: "functions" | "transforms" }> = []
  let depth = 0
  const pending: Array<readonly [unknown, number]> = [[ast, 0]]
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [node, level] = next
    if (typeof node !== "object" || node === null) continue
    const n = node as { type?: unknown; value?: unknown; from?: unknown; relative?: unknown; name?: unknown; pool?: unknown }
    if (n.type !== undefined) depth = Math.max(depth, level)
    if (n.type === "Identifier" && typeof n.value === "string") {
      if (n.from === undefined && n.relative !== true) names.add(n.value)
      else properties.add(n.value)
    }
    if (n.type === "ObjectLiteral" && typeof n.value === "object" && n.value !== null) {
      for (const key of Object.keys(n.value)) properties.add(key)
      // Jexl's parser assigns the keys: a `__proto__` key became the literal's prototype.
      if (Object.getPrototypeOf(n.value) !== Object.prototype) properties.add(RESERVED_NAME)
    }
    if (n.type === "FunctionCall" && typeof n.name === "string" && (n.pool === "functions" || n.pool === "transforms")) {
      calls.push({ name: n.name, pool: n.pool })
    }
    for (const child of Object.values(node)) pending.push([child, n.type === undefined ? level : level + 1])
  }
  return { names, properties, calls, depth }
}
