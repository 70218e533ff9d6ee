/**
 * Column kinds: what the values of a column seen so far say its Arrow type is, and how
 * two kinds join into the narrowest one holding both. `infer.ts` says which values give
 * which kind; `batch.ts` builds columns of a final kind.
 */

export type Scalar = "int32" | "int64" | "float64" | "bool" | "utf8"
export type ListKind = `list<${Scalar}>`

/** A column's type as far as the rows read so far tell. */
export type Kind =
  | Scalar
  | ListKind
  /** Only empty arrays so far. */
  | "list<>"
  /** Utf8 holding JSON text. */
  | "json"

/** A kind once every row is read: a column of only nulls is Utf8, one of only empty lists List<Int32>. */
export type FinalKind = Exclude<Kind, "list<>">

export const finalKind = (kind: Kind | undefined): FinalKind =>
  kind === undefined ? "utf8" : kind === "list<>" ? "list<int32>" : kind

const INT32_MIN = -(2 ** 31)
const INT32_MAX = 2 ** 31 - 1
const INT32_MIN_BIG = BigInt(INT32_MIN)
const INT32_MAX_BIG = BigInt(INT32_MAX)

export const isPlainObject = (value: unknown): value is Record<string, unknown> => {
  if (typeof value !== "object" || value === null) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

export const scalarKind = (value: unknown): Scalar | undefined => {
  switch (typeof value) {
    case "number":
      return Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX ? "int32" : "float64"
    case "bigint":
      return value >= INT32_MIN_BIG && value <= INT32_MAX_BIG ? "int32" : "int64"
    case "boolean":
      return "bool"
    case "string":
      return "utf8"
    default:
      return undefined
  }
}

/** The kind of one non-null value; undefined when no column type can hold it. */
export const valueKind = (value: unknown): Kind | undefined => {
  const scalar = scalarKind(value)
  if (scalar !== undefined) return scalar
  if (Array.isArray(value)) return value.length === 0 ? "list<>" : arrayKind(value)
  return isPlainObject(value) ? "json" : undefined
}

const arrayKind = (items: ReadonlyArray<unknown>): Kind => {
  let element = scalarKind(items[0])
  for (let i = 1; i < items.length && element !== undefined; i++) {
    const kind = scalarKind(items[i])
    element = kind === undefined ? undefined : joinScalar(element, kind)
  }
  return element === undefined ? "json" : `list<${element}>`
}

const isNumeric = (kind: Scalar): boolean => kind === "int32" || kind === "int64" || kind === "float64"

const joinScalar = (a: Scalar, b: Scalar): Scalar | undefined => {
  if (a === b) return a
  if (!isNumeric(a) || !isNumeric(b)) return undefined
  return a === "float64" || b === "float64" ? "float64" : "int64"
}

export const isList = (kind: Kind): kind is ListKind => kind.startsWith("list<") && kind !== "list<>"

export const elementOf = (kind: ListKind): Scalar => kind.slice("list<".length, -1) as Scalar

/** The narrowest kind holding both, or undefined when they don't mix. */
export const join = (a: Kind, b: Kind): Kind | undefined => {
  if (a === b) return a
  if (a === "list<>") return isList(b) || b === "json" ? b : undefined
  if (b === "list<>") return join(b, a)
  if (isList(a) && isList(b)) {
    const element = joinScalar(elementOf(a), elementOf(b))
    return element === undefined ? undefined : `list<${element}>`
  }
  if (isList(a) || isList(b) || a === "json" || b === "json") return undefined
  return joinScalar(a, b)
}

const NAMES: Record<Scalar, string> = {
  int32: "integer",
  int64: "64-bit integer",
  float64: "number",
  bool: "boolean",
  utf8: "string"
}

export const describeKind = (kind: Kind): string => {
  if (kind === "json") return "object or nested array"
  if (kind === "list<>") return "empty list"
  return isList(kind) ? `list of ${NAMES[elementOf(kind)]}s` : NAMES[kind]
}
