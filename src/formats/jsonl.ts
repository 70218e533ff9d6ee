/** JSON lines: one object per line. Blank lines are skipped. */
import type { Table } from "apache-arrow"
import { Effect, Either } from "effect"
import { formatError, type FormatError } from "./error.ts"
import { rowsToTable } from "./infer.ts"
import { isPlainObject } from "./kinds.ts"
import { describeJson, parseJson } from "./json.ts"
import { decodeUtf8 } from "./text.ts"

export const readJsonl = (bytes: Uint8Array, path: string): Effect.Effect<Table, FormatError> =>
  Effect.gen(function* () {
    const text = yield* decodeUtf8(bytes, path)
    const rows: Array<Record<string, unknown>> = []
    const lines: Array<number> = []
    // A CRLF line keeps its "\r": JSON counts it as whitespace.
    const texts = text.split("\n")
    for (let i = 0; i < texts.length; i++) {
      const line = texts[i]!
      if (line.trim() === "") continue
      const parsed = parseJson(line, path, i + 1)
      if (Either.isLeft(parsed)) return yield* parsed.left
      if (!isPlainObject(parsed.right)) {
        return yield* formatError(path, `expected a JSON object, found ${describeJson(parsed.right)}`, { line: i + 1 })
      }
      rows.push(parsed.right)
      lines.push(i + 1)
    }
    return yield* rowsToTable(rows, path, { lines })
  })
