/**
 * JSON documents: an array of row objects, or an object wrapping one, such as
 * `{"version": "1.1", "data": [...]}`. The wrapper must have exactly one array-valued
 * key; its other keys (metadata) are ignored. With two arrays, which one holds the rows
 * would be a guess, so that is an error.
 *
 * The one format read whole: JSON.parse takes the whole document, and streaming it
 * would need a streaming JSON parser. Its batches are built from the rows in memory.
 */
import { Effect, Either, Stream } from "effect"
import { batchBuilder } from "./batch.ts"
import { formatError, type FormatError } from "./error.ts"
import { finalColumns, kindInference } from "./infer.ts"
import { isPlainObject } from "./kinds.ts"
import { type OpenedFile, type OpenOptions, progressFrom } from "./opened.ts"
import { contentChunks, readError, type Source } from "./source.ts"
import { decodeUtf8, positionAt } from "./text.ts"

export const openJson = (source: Source, options: OpenOptions): Effect.Effect<OpenedFile, FormatError> =>
  Effect.gen(function* () {
    const { path } = source
    const bytes = yield* Effect.scoped(Effect.flatMap(source.open, (reader) =>
      Effect.tryPromise({
        try: async () => {
          const chunks: Array<Uint8Array> = []
          for await (const chunk of contentChunks(reader, progressFrom(options, 0, reader.size, reader.size))) chunks.push(chunk)
          return Buffer.concat(chunks)
        },
        catch: readError(path)
      })))
    const rows = yield* rowsOf(yield* parseJson(yield* decodeUtf8(bytes, path), path), path)
    if (!rows.every(isPlainObject)) {
      const row = rows.findIndex((r) => !isPlainObject(r))
      return yield* formatError(path, `row ${row + 1}: expected a JSON object, found ${describeJson(rows[row])}`)
    }
    const inference = yield* kindInference(path)
    for (const row of rows) {
      const error = inference.add(row)
      if (error !== undefined) return yield* error
    }
    const builder = batchBuilder(finalColumns(inference.columns()))
    const starts = Array.from({ length: Math.ceil(rows.length / options.batchRows) }, (_, i) => i * options.batchRows)
    return {
      schema: builder.schema,
      rows: rows.length,
      batches: Stream.fromIterable(starts).pipe(Stream.map((start) => builder.build(rows.slice(start, start + options.batchRows))))
    }
  })

const rowsOf = (document: unknown, path: string): Either.Either<ReadonlyArray<unknown>, FormatError> => {
  if (Array.isArray(document)) return Either.right(document)
  if (!isPlainObject(document)) {
    return Either.left(formatError(path, `expected an array of objects, found ${describeJson(document)}`))
  }
  const arrays = Object.entries(document).filter(([, value]) => Array.isArray(value))
  if (arrays.length === 1) return Either.right(arrays[0]![1] as ReadonlyArray<unknown>)
  const keys = arrays.length === 0 ? "none" : arrays.map(([key]) => `"${key}"`).join(", ")
  return Either.left(formatError(path, `expected an object with exactly one array of rows; array-valued keys: ${keys}`))
}

export const describeJson = (value: unknown): string => {
  if (value === null) return "null"
  return Array.isArray(value) ? "an array" : `${typeof value === "object" ? "an" : "a"} ${typeof value}`
}

/**
 * JSON.parse, with the line and column of a syntax error, since V8's messages often
 * leave out the position. `line` is the line `text` starts at in its file.
 */
export const parseJson = (text: string, path: string, line = 1): Either.Either<unknown, FormatError> =>
  Either.try({
    try: () => JSON.parse(text) as unknown,
    catch: () => {
      const offset = syntaxErrorOffset(text)
      const at = positionAt(text, offset)
      const found = offset < text.length ? JSON.stringify(text[offset]) : "end of JSON"
      return formatError(path, `invalid JSON: unexpected ${found}`, { line: at.line + line - 1, column: at.column })
    }
  })

const ESCAPE = /\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})/y
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y
const WORDS = ["true", "false", "null"]

/**
 * Where `text` stops being JSON: a validating scanner, run only once JSON.parse has
 * failed. Open containers are kept on a stack of their own, not the call stack, so
 * that a line nested 100,000 levels deep is reported like any other.
 */
const syntaxErrorOffset = (text: string): number => {
  let at = 0
  const space = (): void => {
    while (at < text.length && " \t\n\r".includes(text[at]!)) at++
  }
  const eat = (char: string): boolean => {
    if (text[at] !== char) return false
    at++
    return true
  }
  const matches = (pattern: RegExp): boolean => {
    pattern.lastIndex = at
    if (!pattern.test(text)) return false
    at = pattern.lastIndex
    return true
  }
  const string = (): boolean => {
    if (!eat("\"")) return false
    while (at < text.length) {
      const char = text[at]!
      if (char === "\"") return eat(char)
      if (char < " ") return false
      if (char !== "\\") at++
      else if (!matches(ESCAPE)) return false
    }
    return false
  }
  const key = (): boolean => {
    space()
    if (!string()) return false
    space()
    return eat(":")
  }
  const scalar = (): boolean => {
    if (text[at] === "\"") return string()
    const word = WORDS.find((w) => w[0] === text[at])
    return word === undefined ? matches(NUMBER) : [...word].every(eat)
  }
  /** The closing character of each open container, innermost last. */
  const open: Array<"}" | "]"> = []
  for (;;) {
    // A value starts here: a container opens (its first member comes next round), or a whole value is read.
    space()
    if (eat("{")) {
      space()
      if (!eat("}")) {
        open.push("}")
        if (!key()) return at
        continue
      }
    } else if (eat("[")) {
      space()
      if (!eat("]")) {
        open.push("]")
        continue
      }
    } else if (!scalar()) {
      return at
    }
    // A value ended: close what it ends, until a comma starts the next member.
    for (;;) {
      space()
      const close = open[open.length - 1]
      if (close === undefined) return at
      if (eat(",")) {
        if (close === "}" && !key()) return at
        break
      }
      if (!eat(close)) return at
      open.pop()
    }
  }
}
