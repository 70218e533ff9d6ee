/**
 * The two pattern dialects the Python libraries use on repository paths:
 * - `fnmatch`, for `allow_patterns` in snapshot_download: `*` crosses `/`, so
 *   `*.safetensors` matches in any folder;
 * - fsspec's glob, for `data_files` in a dataset card: `*` stays within one folder
 *   and `**` crosses them.
 */

const escape = (char: string) => char.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&")

/** Translates `[...]` and `[!...]` at `i`; a `[` that opens nothing is a literal. */
const charClass = (pattern: string, i: number): { source: string; end: number } | undefined => {
  const close = pattern.indexOf("]", i + 2)
  if (close === -1) return undefined
  const body = pattern.slice(i + 1, close)
  const negated = body.startsWith("!")
  const chars = (negated ? body.slice(1) : body).replace(/[\\\]^]/g, "\\$&")
  return { source: `[${negated ? "^" : ""}${chars}]`, end: close }
}

const translate = (pattern: string, star: string, doubleStar: string | undefined, question: string): RegExp => {
  let source = ""
  for (let i = 0; i < pattern.length; i++) {
    const char = pattern[i]!
    if (char === "*" && doubleStar !== undefined && pattern[i + 1] === "*") {
      const slash = pattern[i + 2] === "/"
      source += slash ? `(?:${doubleStar}/)?` : doubleStar
      i += slash ? 2 : 1
    } else if (char === "*") {
      source += star
    } else if (char === "?") {
      source += question
    } else if (char === "[" && charClass(pattern, i) !== undefined) {
      const cls = charClass(pattern, i)!
      source += cls.source
      i = cls.end
    } else {
      source += escape(char)
    }
  }
  return new RegExp(`^${source}$`)
}

/** Python's fnmatch, as huggingface_hub's `filter_repo_objects` uses it (a trailing `/` means the folder's files). */
export const fnmatch = (pattern: string): RegExp =>
  translate(pattern.endsWith("/") ? `${pattern}*` : pattern, ".*", undefined, ".")

/** fsspec's glob, as the `datasets` library resolves `data_files`. */
export const glob = (pattern: string): RegExp => translate(pattern, "[^/]*", ".*", "[^/]")
