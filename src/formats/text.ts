import { Effect } from "effect"
import { formatError, type FormatError, type Location } from "./error.ts"

// `ignoreBOM: false` (the default) drops a leading UTF-8 BOM, as Excel and Notepad write one.
const utf8 = new TextDecoder("utf-8", { fatal: true })

export const decodeUtf8 = (bytes: Uint8Array, path: string): Effect.Effect<string, FormatError> =>
  Effect.try({ try: () => utf8.decode(bytes), catch: () => formatError(path, "not valid UTF-8 text") })

/** The 1-based line and column of `offset` in `text`. */
export const positionAt = (text: string, offset: number): Required<Location> => {
  let line = 1
  let lineStart = 0
  for (let newline = text.indexOf("\n"); newline !== -1 && newline < offset; newline = text.indexOf("\n", newline + 1)) {
    line++
    lineStart = newline + 1
  }
  return { line, column: offset - lineStart + 1 }
}
