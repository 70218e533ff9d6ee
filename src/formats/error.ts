import { Data } from "effect"

/**
 * A data file that cannot be read as a table. `message` is complete, starting with
 * `path:line:column` as far as they are known, so that it can be shown as is.
 */
export class FormatError extends Data.TaggedError("FormatError")<{
  readonly path: string
  readonly line?: number
  readonly column?: number
  readonly message: string
}> {}

export interface Location {
  readonly line?: number
  readonly column?: number
}

export const formatError = (path: string, reason: string, at: Location = {}): FormatError => {
  const location = [path, at.line, at.column].filter((part) => part !== undefined).join(":")
  return new FormatError({ path, ...at, message: `${location}: ${reason}` })
}
