/**
 * Turns Effect Schema parse issues into located, human diagnostics:
 * `gsm8k.yaml:14:5 stages.train.with.epoch: unknown key (did you mean "epochs"?)`.
 */
import { Either, ParseResult, Schema, SchemaAST as AST } from "effect"
import type { Diagnostic } from "./errors.ts"
import { suggestion } from "./errors.ts"

export type KeyPath = ReadonlyArray<PropertyKey>

/** Where a key path points in the source: `file:line:col`, or the `--set` that put it there. */
export type Locate = (path: KeyPath, at: "key" | "value") => string

export const formatPath = (path: KeyPath): string =>
  path.reduce<string>((acc, key) => (typeof key === "number" ? `${acc}[${key}]` : acc === "" ? String(key) : `${acc}.${String(key)}`), "")

/**
 * Where a decoded value's key path is written in the file. A sweep's variant
 * (`stages["train[lr=2e-5]"].with.lr`) is written as the base stage's `matrix:` value.
 */
export type ToFile = (path: KeyPath, at: "key" | "value") => KeyPath

/** Decodes `input` with every issue reported and unknown keys rejected; issues become diagnostics. */
export const decodeWithDiagnostics = <A, I>(
  schema: Schema.Schema<A, I, never>,
  input: unknown,
  prefix: KeyPath,
  locate: Locate,
  toFile: ToFile = (path) => path
): Either.Either<A, ReadonlyArray<Diagnostic>> =>
  Schema.decodeUnknownEither(schema, { errors: "all", onExcessProperty: "error" })(input).pipe(
    Either.mapLeft((error) =>
      withoutOptionalNoise(ParseResult.ArrayFormatter.formatIssueSync(error.issue)).map((issue): Diagnostic => {
        const path = [...prefix, ...issue.path]
        switch (issue._tag) {
          case "Unexpected": {
            const key = String(issue.path[issue.path.length - 1])
            const allowed = keysAt(schema.ast, issue.path.slice(0, -1))
            const where = toFile(path, "key")
            return {
              location: locate(where, "key"),
              path: formatPath(where),
              message: `unknown key${suggestion(key, allowed)}${allowed.length > 0 && !suggestion(key, allowed) ? ` (expected one of: ${allowed.join(", ")})` : ""}`
            }
          }
          case "Missing":
            return { location: locate(toFile(path.slice(0, -1), "key"), "key"), path: formatPath(toFile(path, "value")), message: "is required but missing" }
          default: {
            const where = toFile(path, "value")
            return { location: locate(where, "value"), path: formatPath(where), message: tidy(issue.message) }
          }
        }
      })
    )
  )

/**
 * A union reports a bad value once per member. An optional key's schema is a union
 * with `undefined`, whose "expected undefined" half says nothing to a user; and where
 * one member names a bad item inside the value (`needs[0]`), another member's "expected
 * a string" at the value itself is noise too.
 */
const withoutOptionalNoise = (issues: ReadonlyArray<ParseResult.ArrayFormatterIssue>) =>
  issues.filter((issue) =>
    !(issue.message.startsWith("Expected undefined, actual") &&
      issues.some((other) => other !== issue && formatPath(other.path).startsWith(formatPath(issue.path)))) &&
    !(issue._tag === "Type" && issues.some((other) => other.path.length > issue.path.length && issue.path.every((key, i) => other.path[i] === key)))
  )

/** Schema messages are written for developers; shorten the common ones for users. */
const tidy = (message: string): string =>
  message.replace(/^Expected (.*), actual (.*)$/s, (_, expected: string, actual: string) => `expected ${expected}, got ${actual}`)

/** The property names a struct accepts at `path` inside `ast` (through unions, refinements, transformations). */
export const keysAt = (ast: AST.AST, path: KeyPath): ReadonlyArray<string> => {
  const nodes = path.reduce<ReadonlyArray<AST.AST>>((current, key) => current.flatMap((node) => childAt(node, key)), [ast])
  return [...new Set(nodes.flatMap(propertyNames))]
}

const unwrap = (ast: AST.AST): ReadonlyArray<AST.AST> => {
  switch (ast._tag) {
    case "Transformation":
      return unwrap(ast.from)
    case "Refinement":
      return unwrap(ast.from)
    case "Suspend":
      return unwrap(ast.f())
    case "Union":
      return ast.types.flatMap(unwrap)
    default:
      return [ast]
  }
}

const childAt = (ast: AST.AST, key: PropertyKey): ReadonlyArray<AST.AST> =>
  unwrap(ast).flatMap((node) => {
    if (node._tag === "TypeLiteral") {
      const property = node.propertySignatures.find((p) => p.name === key)
      if (property) return [property.type]
      return node.indexSignatures.map((s) => s.type)
    }
    if (node._tag === "TupleType" && typeof key === "number") {
      const element = node.elements[key]
      return element ? [element.type] : node.rest.map((r) => r.type)
    }
    return []
  })

const propertyNames = (ast: AST.AST): ReadonlyArray<string> =>
  unwrap(ast).flatMap((node) =>
    node._tag === "TypeLiteral" ? node.propertySignatures.map((p) => String(p.name)) : []
  )
