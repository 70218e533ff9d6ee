/**
 * A parquet file's columns: the kind each one's declared type gives (see `parquet.ts`),
 * and whether that kind is final before any value is read. A kind is final when no
 * value of that type can widen it or fail to fit:
 * - Bool, Float64, Utf8 and JSON text always are.
 * - Int32 is for signed INT32; for INT64 and unsigned types when every row group's
 *   statistics have a minimum and maximum within int32 (an INT64 beyond is Int64, and an
 *   unsigned INT32 beyond is Float64, which only the values would tell here).
 * - a list is, as its element kind is, when its elements cannot be null: a null element
 *   makes the row's array JSON text, which a list column refuses. They cannot when the
 *   element is REQUIRED, or the statistics count no null at all.
 * The others (no declared kind, or statistics that do not settle it) are "unsettled":
 * their values are read first.
 */
import { type FileMetaData, parquetSchema, type SchemaElement, type SchemaTree, type Statistics } from "hyparquet"
import type { Column } from "./infer.ts"
import { elementOf, isList, type Kind, type Scalar, scalarKind } from "./kinds.ts"

export interface ParquetColumns {
  /** In schema order, with their declared kinds. */
  readonly columns: ReadonlyArray<Column>
  /** Names of the columns whose values may still widen their kind. */
  readonly unsettled: ReadonlyArray<string>
}

export const settledColumns = (metadata: FileMetaData): ParquetColumns => {
  const columns: Array<Column> = []
  const unsettled: Array<string> = []
  for (const node of parquetSchema(metadata).children) {
    const name = node.element.name
    const kind = declaredKind(node)
    columns.push({ name, kind })
    const statistics = metadata.row_groups.map((group) =>
      group.columns.find((chunk) => chunk.meta_data?.path_in_schema[0] === name)?.meta_data?.statistics)
    if (!isSettled(node, kind, statistics)) unsettled.push(name)
  }
  return { columns, unsettled }
}

const isSettled = (node: SchemaTree, kind: Kind | undefined, statistics: ReadonlyArray<Statistics | undefined>): boolean => {
  if (kind === undefined) return false
  if (!isList(kind)) return kind !== "int32" || integersSettled(node.element, statistics)
  const leaf = listElement(node)!.element
  const noNullElements = leaf.repetition_type === "REQUIRED" || statistics.every((s) => s?.null_count === 0n)
  return noNullElements && (elementOf(kind) !== "int32" || integersSettled(leaf, statistics))
}

const integersSettled = (leaf: SchemaElement, statistics: ReadonlyArray<Statistics | undefined>): boolean =>
  (leaf.type === "INT32" && !isUnsigned(leaf)) ||
  statistics.every((s) => scalarKind(s?.min_value) === "int32" && scalarKind(s?.max_value) === "int32")

const isUnsigned = (element: SchemaElement): boolean =>
  element.converted_type?.startsWith("UINT_") === true ||
  (element.logical_type?.type === "INTEGER" && !element.logical_type.isSigned)

const declaredKind = (node: SchemaTree): Kind | undefined => {
  if (annotationOf(node.element) === "LIST") {
    const element = listElement(node)
    const kind = element === undefined ? undefined : primitiveKind(element.element)
    return kind === undefined ? undefined : `list<${kind}>`
  }
  return node.children.length > 0 ? "json" : primitiveKind(node.element)
}

/** The leaf under a LIST: `list.element` in the standard layout, the repeated field itself in the legacy one. */
const listElement = (list: SchemaTree): SchemaTree | undefined => {
  const repeated = list.children[0]
  const element = repeated?.children.length === 1 ? repeated.children[0] : repeated
  return element?.children.length === 0 ? element : undefined
}

const annotationOf = (element: SchemaElement): string | undefined =>
  element.logical_type?.type ?? element.converted_type

const TEXT_ANNOTATIONS = new Set([undefined, "STRING", "UTF8", "ENUM", "JSON"])

/** Undefined where the values should decide (INT96 timestamps, fixed-length byte arrays, geometry). */
const primitiveKind = (element: SchemaElement): Scalar | undefined => {
  const annotation = annotationOf(element)
  if (annotation === "DECIMAL" || annotation === "FLOAT16") return "float64"
  if (annotation === "DATE" || annotation?.startsWith("TIMESTAMP")) return "utf8"
  switch (element.type) {
    case "BOOLEAN":
      return "bool"
    case "INT32":
    case "INT64":
      return "int32"
    case "FLOAT":
    case "DOUBLE":
      return "float64"
    case "BYTE_ARRAY":
      return TEXT_ANNOTATIONS.has(annotation) ? "utf8" : undefined
    default:
      return undefined
  }
}
