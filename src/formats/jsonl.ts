/**
 * JSON lines: one object per line. Blank lines are skipped. Read twice, as a stream:
 * once to infer each column's kind from every row, once to build the batches with the
 * final kinds, so that memory holds one batch of rows, never the file.
 */
import { Effect, Either, Stream } from "effect"
import { batchBuilder } from "./batch.ts"
import { formatError, type FormatError } from "./error.ts"
import { finalColumns, kindInference } from "./infer.ts"
import { describeJson, parseJson } from "./json.ts"
import { isPlainObject } from "./kinds.ts"
import { type OpenedFile, type OpenOptions, progressFrom, rowBatches } from "./opened.ts"
import { contentChunks, lineChunks, type Lines, pass, type Source, textChunks } from "./source.ts"

export const openJsonl = (source: Source, options: OpenOptions): Effect.Effect<OpenedFile, FormatError> =>
  Effect.gen(function* () {
    const { path } = source
    const { size, version } = yield* Effect.scoped(source.open)
    const lines = (before: number) =>
      pass(source, (reader) => lineChunks(textChunks(contentChunks(reader, progressFrom(options, before, size, 2 * size)), path)), version)
    const inference = yield* kindInference(path)
    let rows = 0
    yield* Stream.runForEach(lines(0), (chunk) => {
      const error = eachObject(chunk, path, (row, line) => {
        rows++
        return inference.add(row, line)
      })
      return error === undefined ? Effect.void : Effect.fail(error)
    })
    const builder = batchBuilder(finalColumns(inference.columns()))
    const objects = lines(size).pipe(
      Stream.mapEffect((chunk) => {
        const objects: Array<Record<string, unknown>> = []
        const error = eachObject(chunk, path, (row) => void objects.push(row))
        return error === undefined ? Effect.succeed(objects) : Effect.fail(error)
      }),
      Stream.flattenIterables
    )
    return { schema: builder.schema, rows, batches: rowBatches(objects, builder, options.batchRows) }
  })

/** Hands each line's object to `f` (with its line number); stops at the first error, a line's or `f`'s. */
const eachObject = (
  lines: Lines,
  path: string,
  f: (row: Record<string, unknown>, line: number) => FormatError | undefined
): FormatError | undefined => {
  for (let i = 0; i < lines.texts.length; i++) {
    // A CRLF line keeps its "\r": JSON counts it as whitespace.
    const text = lines.texts[i]!
    if (text.trim() === "") continue
    const line = lines.first + i
    const parsed = parseJson(text, path, line)
    if (Either.isLeft(parsed)) return parsed.left
    if (!isPlainObject(parsed.right)) {
      return formatError(path, `expected a JSON object, found ${describeJson(parsed.right)}`, { line })
    }
    const error = f(parsed.right, line)
    if (error !== undefined) return error
  }
  return undefined
}
