/**
 * The two pattern dialects the Python libraries use on repository paths:
 * - `fnmatch`, for `allow_patterns` in snapshot_download: `*` crosses `/`, so
 *   `*.safetensors` matches in any folder;
 * - fsspec's glob, for `data_files` in a dataset card: `*` stays within one folder
 *   and `**` crosses them.
 *
 * Patterns come from dataset cards, which anyone can write, so they are not turned
 * into regular expressions: `****…x` would backtrack for ages. A pattern is a list of
 * tokens, and a path is matched by walking the set of tokens it could have reached,
 * one character (UTF-16 unit, as a RegExp without the `u` flag) at a time: at worst
 * the path's length times the pattern's, whatever the pattern.
 */

const CHAR = 0
/** `?`: one character (`/` too where it crosses). */
const ONE = 1
const CLASS = 2
/** `*` (fnmatch's, or glob's `**`, where it crosses): any run of characters. */
const STAR = 3
/** glob's `**` followed by `/`: nothing, or any run of characters that ends with `/`. */
const FOLDERS = 4

const SLASH = 47

interface Token {
  readonly kind: typeof CHAR | typeof ONE | typeof CLASS | typeof STAR | typeof FOLDERS
  /** CHAR: the character's code. */
  readonly code?: number
  /** ONE and STAR: whether `/` is one of the characters. */
  readonly crosses?: boolean
  /** CLASS: inclusive ranges of codes, and whether they are the ones not matched. */
  readonly ranges?: ReadonlyArray<readonly [number, number]>
  readonly negated?: boolean
}

/** A compiled pattern; `test` as a RegExp's. */
export interface PathPattern {
  readonly test: (path: string) => boolean
}

/** `[...]` or `[!...]` at `i`, as Python's fnmatch reads it (a `]` first is a member); undefined when nothing closes it. */
const charClass = (pattern: string, i: number): { token: Token; end: number } | undefined => {
  let j = i + 1
  if (pattern[j] === "!") j++
  if (pattern[j] === "]") j++
  const close = pattern.indexOf("]", j)
  if (close === -1) return undefined
  const negated = pattern[i + 1] === "!"
  const body = pattern.slice(negated ? i + 2 : i + 1, close)
  const ranges: Array<readonly [number, number]> = []
  for (let k = 0; k < body.length; k++) {
    if (body[k + 1] === "-" && k + 2 < body.length) {
      ranges.push([body.charCodeAt(k), body.charCodeAt(k + 2)])
      k += 2
    } else {
      ranges.push([body.charCodeAt(k), body.charCodeAt(k)])
    }
  }
  return { token: { kind: CLASS, ranges, negated }, end: close }
}

const tokenize = (pattern: string, dialect: "fnmatch" | "glob"): ReadonlyArray<Token> => {
  const tokens: Array<Token> = []
  for (let i = 0; i < pattern.length; i++) {
    const char = pattern[i]!
    const cls = char === "[" ? charClass(pattern, i) : undefined
    if (char === "*") {
      let run = 1
      while (pattern[i + run] === "*") run++
      i += run - 1
      if (dialect === "glob" && run >= 2 && pattern[i + 1] === "/") {
        tokens.push({ kind: FOLDERS })
        i++
      } else {
        // A run of stars is one star: `***` matches what `**` does.
        tokens.push({ kind: STAR, crosses: dialect === "fnmatch" || run >= 2 })
      }
    } else if (char === "?") {
      tokens.push({ kind: ONE, crosses: dialect === "fnmatch" })
    } else if (cls !== undefined) {
      tokens.push(cls.token)
      i = cls.end
    } else {
      tokens.push({ kind: CHAR, code: pattern.charCodeAt(i) })
    }
  }
  return tokens
}

const compile = (pattern: string, dialect: "fnmatch" | "glob"): PathPattern => {
  const tokens = tokenize(pattern, dialect)
  const count = tokens.length
  // Most patterns start with a folder name: paths without it are turned away at once.
  const literal = tokens.findIndex((token) => token.kind !== CHAR)
  const prefix = tokens.slice(0, literal === -1 ? count : literal).map((token) => String.fromCharCode(token.code!)).join("")
  if (literal === -1) return { test: (path) => path === prefix }

  // The tokens as flat arrays, for the walk below, which runs once per path and pattern.
  const kinds = Uint8Array.from(tokens, (token) => token.kind)
  const codes = Int32Array.from(tokens, (token) => token.code ?? -1)
  const crosses = Uint8Array.from(tokens, (token) => (token.crosses ? 1 : 0))
  /** Whether a state is passed without reading: a star, or an empty `**\/` (the end is not). */
  const skippable = Uint8Array.from({ length: count + 1 }, (_, state) => (kinds[state] === STAR || kinds[state] === FOLDERS ? 1 : 0))
  const inClass = (token: Token, code: number) => token.ranges!.some(([low, high]) => code >= low && code <= high) !== token.negated

  // The states reached, as two lists swapped at each character, and a stamp per state
  // saying whether it is already in the list being built.
  const lists = [new Int32Array(count + 1), new Int32Array(count + 1)]
  const stamps = new Uint32Array(count + 1)
  let stamp = 0

  return {
    test: (path) => {
      if (!path.startsWith(prefix)) return false
      let current = lists[0]!
      let next = lists[1]!
      let size = 0
      stamp++
      for (let s = literal; stamps[s] !== stamp; s++) {
        stamps[s] = stamp
        next[size++] = s
        if (!skippable[s]) break
      }
      for (let at = prefix.length; at < path.length; at++) {
        const swap = current
        current = next
        next = swap
        const reached = size
        size = 0
        stamp++
        const code = path.charCodeAt(at)
        for (let k = 0; k < reached; k++) {
          const state = current[k]!
          if (state === count) continue
          const kind = kinds[state]
          let to = -1
          let stay = false
          if (kind === CHAR) to = codes[state] === code ? state + 1 : -1
          else if (kind === ONE) to = crosses[state] === 1 || code !== SLASH ? state + 1 : -1
          else if (kind === CLASS) to = inClass(tokens[state]!, code) ? state + 1 : -1
          else if (kind === STAR) stay = crosses[state] === 1 || code !== SLASH
          else {
            stay = true
            to = code === SLASH ? state + 1 : -1
          }
          // Each target, and what it reaches without reading.
          for (let s = stay ? state : count + 1; s <= count && stamps[s] !== stamp; s++) {
            stamps[s] = stamp
            next[size++] = s
            if (!skippable[s]) break
          }
          for (let s = to; s >= 0 && stamps[s] !== stamp; s++) {
            stamps[s] = stamp
            next[size++] = s
            if (!skippable[s]) break
          }
        }
        if (size === 0) return false
      }
      for (let k = 0; k < size; k++) if (next[k] === count) return true
      return false
    }
  }
}

/** Python's fnmatch, as huggingface_hub's `filter_repo_objects` uses it (a trailing `/` means the folder's files). */
export const fnmatch = (pattern: string): PathPattern => compile(pattern.endsWith("/") ? `${pattern}*` : pattern, "fnmatch")

/** fsspec's glob, as the `datasets` library resolves `data_files`. */
export const glob = (pattern: string): PathPattern => compile(pattern, "glob")
