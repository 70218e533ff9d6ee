/**
 * The pipeline file: YAML → a typed spec, with every node's source position kept
 * so that later checks (params, `needs`, cycles) can point at file:line:col.
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect, Either, type ParseResult, Schema } from "effect"
import { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node } from "yaml"
import { decodeWithDiagnostics, formatPath, type KeyPath, type Locate } from "./diagnostics.ts"
import { type Diagnostic, SpecError, suggestion, UsageError } from "./errors.ts"

/** A user's words for a wrong shape, instead of the schema's TypeScript type. */
const expected = (what: string) => (issue: ParseResult.ParseIssue) =>
  `expected ${what}, got ${"actual" in issue ? shown(issue.actual) : "something else"}`

const shown = (value: unknown): string => {
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

const IDENTIFIER_RULE = "start with a letter or _ and hold only letters, digits, _ and -"

const Identifier = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z_][A-Za-z0-9_-]*$/, { message: () => `must ${IDENTIFIER_RULE}` })
)

/** A value a sweep may try: what fits in a variant's id (`train[learning_rate=2e-5]`). */
export type MatrixValue = number | string | boolean

const MATRIX_KEY_RULE = "a param (learning_rate) or a dotted path into one (lora.r)"

const Matrix = Schema.Record({
  key: Schema.String,
  value: Schema.NonEmptyArray(
    Schema.Union(Schema.Number, Schema.String, Schema.Boolean).annotations({ message: (issue) => ({ message: expected("a number, string or boolean")(issue), override: true }) })
  ).annotations({
    message: (issue) => {
      const actual = "actual" in issue ? issue.actual : undefined
      return Array.isArray(actual)
        ? { message: "expected a non-empty list of values to try, got []", override: actual.length === 0 }
        : { message: expected("a list of values to try ([1e-5, 2e-5])")(issue), override: true }
    }
  })
}).annotations({ message: expected(`a map from ${MATRIX_KEY_RULE} to a list of values, such as { learning_rate: [1e-5, 2e-5] }`) }).pipe(
  Schema.filter((matrix) => {
    const keys = Object.keys(matrix)
    return keys.flatMap((key): ReadonlyArray<Schema.FilterIssue> => {
      const parts = key.split(".")
      if (parts.includes("")) return [{ path: [key], message: `"${key}" is not ${MATRIX_KEY_RULE}: it has an empty part` }]
      if (parts.includes(RESERVED_KEY)) return [{ path: [key], message: `"${key}" cannot be swept: ${RESERVED_WHY}` }]
      const covering = keys.find((other) => other !== key && key.startsWith(`${other}.`))
      if (covering !== undefined) return [{ path: [key], message: `"${key}" is inside "${covering}", which the matrix also sweeps: keep one of them` }]
      const values = matrix[key]!
      return values.flatMap((value, i) =>
        values.findIndex((other) => Object.is(other, value)) < i ? [{ path: [key, i], message: `${shown(value)} is listed twice: each value makes one variant` }] : []
      )
    })
  })
)

/** One param a stage sweeps, in file order: its key as written (`lora.r`), the path under `with:`, the values. */
interface MatrixAxis {
  readonly key: string
  readonly path: ReadonlyArray<string>
  readonly values: ReadonlyArray<MatrixValue>
}

const StageEntry = Schema.Struct({
  uses: Schema.String.annotations({
    description: "A built-in stage (fetch, tokenize, shuffle, …) or a path to a stage module (./stages/x.ts)"
  }),
  description: Schema.optional(Schema.String),
  needs: Schema.optional(
    Schema.Union(Identifier, Schema.Array(Identifier)).annotations({
      // Said once for the union, unless the value is a list: then each bad item is named.
      message: (issue) => {
        const actual = "actual" in issue ? issue.actual : undefined
        return Array.isArray(actual)
          ? { message: expected("a list of stage ids")(issue), override: false }
          : { message: typeof actual === "string" ? `"${actual}" is not a stage id: ids ${IDENTIFIER_RULE}` : expected("a stage id or a list of stage ids")(issue), override: true }
      }
    })
  ).annotations({
    description: "The stages whose outputs this stage reads"
  }),
  with: Schema.optional(
    Schema.Record({ key: Schema.String, value: Schema.Unknown }).annotations({ message: expected("a map of params (key: value)") })
  ).annotations({
    description: "The stage's params"
  }),
  matrix: Schema.optional(Matrix).annotations({
    description: "A sweep: each param (`learning_rate`, or a dotted path such as `lora.r`) with the values to try; the stage runs once per combination"
  })
}).annotations({ message: expected("a stage: a map with uses: (and needs:, with:, matrix: as needed)") }).pipe(
  // A swept path must end in a map it can set a key of: `lora.r` needs `with.lora` to be a map, or absent.
  Schema.filter((entry) =>
    Object.keys(entry.matrix ?? {}).flatMap((key): ReadonlyArray<Schema.FilterIssue> => {
      const parts = key.split(".")
      let node: unknown = entry.with
      for (const [i, part] of parts.slice(0, -1).entries()) {
        node = isObject(node) ? node[part] : undefined
        if (node !== undefined && node !== null && !isObject(node)) {
          const through = parts.slice(0, i + 1).join(".")
          return [{ path: ["matrix", key], message: `with.${through} is ${shown(node)}, not a map, so the matrix cannot set "${key}" in it` }]
        }
      }
      return []
    })
  )
)

export const PipelineFile = Schema.Struct({
  name: Schema.optional(Identifier),
  description: Schema.optional(Schema.String),
  cache: Schema.optional(
    Schema.Struct({
      remote: Schema.optional(
        Schema.String.pipe(Schema.pattern(/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/, { message: () => "expected s3://BUCKET or s3://BUCKET/PREFIX" }))
      ).annotations({ description: "The remote artifact store shared by machines and CI: s3://BUCKET/PREFIX (PIPELINE_REMOTE overrides it; PIPELINE_REMOTE=off turns it off)" })
    }).annotations({ message: expected("a map with remote: s3://BUCKET/PREFIX") })
  ).annotations({ description: "Where entries are shared" }),
  stages: Schema.Record({ key: Identifier, value: StageEntry }).annotations({ message: expected("a map of stages (id: { uses: … })") })
}).annotations({ message: expected("a pipeline: a map with stages: (and name:, description: as needed)") })

export interface StageSpec {
  readonly id: string
  readonly uses: string
  readonly needs: ReadonlyArray<string>
  /** The raw `with:` block, to be decoded by the stage's own params Schema. */
  readonly with: unknown
  /** The `matrix:` sweep, empty for a stage that runs once (see matrix.ts). */
  readonly matrix: ReadonlyArray<MatrixAxis>
}

export interface PipelineSpec {
  /** Absolute path of the pipeline file. */
  readonly file: string
  readonly baseDir: string
  readonly name: string
  /** In file order. */
  readonly stages: ReadonlyArray<StageSpec>
  readonly locate: Locate
  /** `cache.remote`: the remote artifact store named in the file, if any. */
  readonly remote?: string | undefined
}

/** A `--set stage.key=value` override; the value is read as YAML (`7`, `true`, `[a, b]`). */
export interface Override {
  readonly stage: string
  readonly path: ReadonlyArray<string>
  readonly value: unknown
  readonly text: string
}

export const parseOverride = (text: string): Either.Either<Override, UsageError> => {
  const match = /^([A-Za-z_][A-Za-z0-9_-]*)\.([^=]+)=(.*)$/s.exec(text)
  if (match === null) {
    return Either.left(new UsageError({ message: `--set ${text}: expected STAGE.KEY=VALUE, for example --set shuffled.seed=7` }))
  }
  const path = match[2]!.split(".")
  if (path.includes("")) {
    return Either.left(new UsageError({ message: `--set ${text}: the key path "${match[2]}" has an empty part: write KEY or KEY.SUBKEY, for example --set short.max_length.max=256` }))
  }
  if (path.includes(RESERVED_KEY)) {
    return Either.left(new UsageError({ message: `--set ${text}: "${RESERVED_KEY}" cannot be a key: ${RESERVED_WHY}` }))
  }
  // Error positions would only point into the flag's own text; the caller names the flag.
  const doc = parseDocument(match[3]!, { prettyErrors: false })
  const value = documentValue(doc)
  if (doc.errors.length > 0 || Either.isLeft(value)) {
    const why = doc.errors[0]?.message.split("\n")[0] ?? (Either.isLeft(value) ? value.left.message : "")
    return Either.left(new UsageError({ message: `--set ${text}: the value is not valid YAML (${tooDeep(why)})` }))
  }
  return Either.right({ stage: match[1]!, path, value: value.right, text })
}

/**
 * A key that a plain JavaScript object does not keep: `{ __proto__: 1 }` sets the
 * object's prototype instead, so a stage or param of that name would vanish silently.
 */
const RESERVED_KEY = "__proto__"
const RESERVED_WHY = "JavaScript reserves the name (a value under it would be lost); rename it"

/** The parser's words for a document nested past what it can read. */
const tooDeep = (message: string): string =>
  message.startsWith("Maximum call stack size exceeded") ? "nested too deeply to read" : message

const displayName = (file: string, cwd: string, path: Path.Path): string => {
  const relative = path.relative(cwd, file)
  return relative.startsWith("..") ? file : relative
}

/**
 * A pipeline file read as far as it can be, with the problems found on the way. A file
 * whose `stages:` are sound comes back with its stages even when other keys are wrong
 * (`name: [1]`), so that the stages' params can be checked too and every problem
 * reported at once; `diagnostics` is then not empty. Unreadable YAML, a malformed
 * `stages:` and a bad `--set` fail at once.
 */
export const readSpec = (file: string, overrides: ReadonlyArray<Override> = []) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const absolute = path.resolve(file)
    const shown = displayName(absolute, process.cwd(), path)
    const source = yield* fs.readFileString(absolute).pipe(
      Effect.mapError(() =>
        new SpecError({ file: absolute, diagnostics: [{ location: shown, path: "", message: "cannot read the pipeline file (does it exist?)" }] })
      )
    )
    const lines = new LineCounter()
    const doc = parseDocument(source, { lineCounter: lines, uniqueKeys: true, prettyErrors: false })
    const at = (offset: number) => {
      const pos = lines.linePos(offset)
      return `${shown}:${pos.line}:${pos.col}`
    }
    if (doc.errors.length > 0) {
      return yield* new SpecError({
        file: absolute,
        diagnostics: doc.errors.map((e) => ({ location: at(e.pos[0]), path: "", message: tooDeep(e.message.split("\n")[0]!) }))
      })
    }
    const overridden = new Map<string, string>()
    const locate: Locate = (keyPath, where) => {
      const formatted = formatPath(keyPath)
      for (const [target, text] of overridden) {
        if (formatted === target || formatted.startsWith(`${target}.`) || formatted.startsWith(`${target}[`)) return `--set ${text}`
      }
      const node = nodeAt(doc, keyPath, where)
      return node?.range ? at(node.range[0]) : shown
    }
    for (const override of overrides) {
      const target = yield* applyOverride(doc, override, shown, locate)
      overridden.set(formatPath(target), override.text)
    }
    const plain = documentValue(doc)
    if (Either.isLeft(plain)) {
      return yield* new SpecError({
        file: absolute,
        diagnostics: [{ location: plain.left.offset === undefined ? shown : at(plain.left.offset), path: "", message: plain.left.message }]
      })
    }
    const whole = decodeWithDiagnostics(PipelineFile, plain.right ?? {}, [], locate)
    const schemaProblems = Either.isLeft(whole) ? whole.left : []
    // A reserved key that the schema already calls unknown is reported once.
    const diagnostics: Array<Diagnostic> = [
      ...reservedKeys(doc, locate).filter((reserved) => !schemaProblems.some((d) => d.path === reserved.path)),
      ...schemaProblems
    ]
    let decoded: { readonly name?: string | undefined; readonly cache?: { readonly remote?: string | undefined } | undefined; readonly stages: typeof PipelineFile.Type["stages"] }
    if (Either.isRight(whole)) {
      decoded = whole.right
    } else {
      // Wrong top-level keys do not hide the stages' own problems: go on when `stages:` is sound.
      const stagesAlone = isObject(plain.right) ? decodeWithDiagnostics(StagesOnly, { stages: plain.right.stages }, [], locate) : undefined
      if (stagesAlone === undefined || Either.isLeft(stagesAlone)) return yield* new SpecError({ file: absolute, diagnostics })
      decoded = stagesAlone.right
    }
    const stages: Array<StageSpec> = Object.entries(decoded.stages).map(([id, entry]) => ({
      id,
      uses: entry.uses,
      needs: entry.needs === undefined ? [] : typeof entry.needs === "string" ? [entry.needs] : [...entry.needs],
      with: entry.with ?? {},
      matrix: Object.entries(entry.matrix ?? {}).map(([key, values]) => ({ key, path: key.split("."), values }))
    }))
    for (const override of overrides) {
      const swept = stages.find((s) => s.id === override.stage)?.matrix.find((axis) => startsWith(axis.path, override.path) || startsWith(override.path, axis.path))
      if (swept !== undefined) {
        return yield* new UsageError({
          message: `--set ${override.text}: stages.${override.stage}.with.${swept.key} is swept by matrix: at ${locate(["stages", override.stage, "matrix", swept.key], "key")}: edit the matrix instead`
        })
      }
    }
    if (stages.length === 0) {
      diagnostics.push({ location: locate(["stages"], "value"), path: "stages", message: "a pipeline needs at least one stage" })
    }
    const name = decoded.name ?? path.basename(absolute).replace(/\.ya?ml$/, "")
    const spec: PipelineSpec = { file: absolute, baseDir: path.dirname(absolute), name, stages, locate, remote: decoded.cache?.remote }
    return { spec, diagnostics } satisfies SpecReading
  })

export interface SpecReading {
  readonly spec: PipelineSpec
  /** Problems found in the file; the spec is usable only for finding more of them when there are any. */
  readonly diagnostics: ReadonlyArray<Diagnostic>
}

const StagesOnly = Schema.Struct({ stages: PipelineFile.fields.stages })

const startsWith = (path: ReadonlyArray<string>, prefix: ReadonlyArray<string>): boolean =>
  prefix.length <= path.length && prefix.every((key, i) => path[i] === key)

const isObject = (value: unknown): value is { readonly [key: string]: unknown } =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/**
 * Puts one `--set` value into the document: `["stages", stage, "with", ...path]`, maps
 * created where keys are missing. Going through anything that has no keys (a scalar,
 * a list at a non-index, an alias) is the flag's error, saying what is there. Returns
 * the path of the first node the flag put there, where its problems are located.
 */
const applyOverride = (doc: Document, override: Override, shown: string, locate: Locate): Effect.Effect<ReadonlyArray<string | number>, UsageError> => {
  const fail = (message: string) => Effect.fail(new UsageError({ message: `--set ${override.text}: ${message}` }))
  const stagesNode = doc.get("stages", true)
  const ids = isMap(stagesNode) ? stagesNode.items.flatMap((p) => (isScalar(p.key) ? [String(p.key.value)] : [])) : []
  if (!isMap(stagesNode) || !ids.includes(override.stage)) {
    return fail(`there is no stage "${override.stage}" in ${shown}${suggestion(override.stage, ids)}`)
  }
  const keys = ["with", ...override.path]
  const target: Array<string | number> = ["stages", override.stage]
  // Where the flag's value starts in the document: the first node it put there.
  let placed: ReadonlyArray<string | number> | undefined
  let parent: unknown = stagesNode.get(override.stage, true)
  for (const [i, key] of keys.entries()) {
    const last = i === keys.length - 1
    const here = () => `${formatPath(target)} is ${describeNode(parent)} at ${locate(target, "value")}`
    if (isAlias(parent)) {
      return fail(`${here()}: --set cannot change a value shared through an alias; write the value out in the file, or set it there`)
    }
    if (isSeq(parent)) {
      const index = /^\d+$/.test(key) ? Number(key) : -1
      if (index < 0 || index >= parent.items.length) {
        const range = parent.items.length === 0 ? "it is empty" : `0 to ${parent.items.length - 1}`
        return fail(`${here()}, so "${key}" is not one of its indices (${range})`)
      }
      target.push(index)
      if (last) parent.set(index, doc.createNode(override.value))
      else parent = parent.get(index, true)
      continue
    }
    if (!isMap(parent)) {
      return fail(`${here()}, not a map${i === 1 ? " of params" : ""}, so it has no key "${key}" to set`)
    }
    target.push(key)
    const child = parent.get(key, true)
    // A key node, not a bare string: the rest of this module reads keys as scalars.
    if (last) {
      parent.set(doc.createNode(key), doc.createNode(override.value))
    } else if (child === undefined || child === null || (isScalar(child) && child.value === null)) {
      const created = doc.createNode({})
      parent.set(doc.createNode(key), created)
      placed ??= [...target]
      parent = created
    } else {
      parent = child
    }
  }
  return Effect.succeed(placed ?? target)
}

const describeNode = (node: unknown): string => {
  if (isAlias(node)) return `an alias (*${node.source})`
  if (isSeq(node)) return "a list"
  if (isMap(node)) return "a map"
  if (isScalar(node)) {
    const value = node.value
    if (value === null) return "empty"
    return typeof value === "string" ? `a string (${JSON.stringify(value)})` : `a ${typeof value} (${String(value)})`
  }
  return "empty"
}

/** Every `__proto__` key in the document (the parser keeps it; decoding would drop it), located. */
const reservedKeys = (doc: Document, locate: Locate): ReadonlyArray<Diagnostic> => {
  const found: Array<Diagnostic> = []
  // An explicit stack: a document may be nested deeper than the call stack allows.
  const pending: Array<{ readonly node: unknown; readonly path: ReadonlyArray<string | number> }> = [{ node: doc.contents, path: [] }]
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const { node, path } = next
    if (isMap(node)) {
      for (const pair of node.items) {
        const key = isScalar(pair.key) ? String(pair.key.value) : undefined
        if (key === RESERVED_KEY) {
          const keyPath = [...path, key]
          const stageId = path.length === 1 && path[0] === "stages"
          found.push({
            location: locate(keyPath, "key"),
            path: formatPath(keyPath),
            message: stageId ? `invalid stage id "${key}": ${RESERVED_WHY}` : `invalid key "${key}": ${RESERVED_WHY}`
          })
        } else if (key !== undefined) {
          pending.push({ node: pair.value, path: [...path, key] })
        }
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => pending.push({ node: item, path: [...path, i] }))
    }
  }
  return found
}

/**
 * The document as plain data. Parsing succeeds on a few documents that cannot
 * become data: an alias to an anchor never set, or aliases past the
 * billion-laughs limit. Those are spec errors, located at the first alias.
 */
const documentValue = (doc: Document): Either.Either<unknown, { readonly message: string; readonly offset: number | undefined }> => {
  try {
    return Either.right(doc.toJS({ maxAliasCount: 100 }))
  } catch (error) {
    let offset: number | undefined
    visit(doc, {
      Alias(_, node) {
        offset = node.range?.[0]
        return visit.BREAK
      }
    })
    return Either.left({ message: (error as Error).message, offset })
  }
}

/** The deepest node on `keyPath` that exists: the key node of the last pair, or its value. */
const nodeAt = (doc: Document, keyPath: KeyPath, where: "key" | "value"): Node | undefined => {
  let current: unknown = doc.contents
  let found: Node | undefined = doc.contents ?? undefined
  for (const [i, key] of keyPath.entries()) {
    const last = i === keyPath.length - 1
    if (isMap(current)) {
      const pair = current.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(key))
      if (pair === undefined) return found
      if (last && where === "key") return pair.key as Node
      found = (pair.value as Node | null) ?? (pair.key as Node)
      current = pair.value
    } else if (isSeq(current) && typeof key === "number") {
      const item = current.items[key] as Node | undefined
      if (item === undefined) return found
      found = item
      current = item
    } else {
      return found
    }
  }
  return found
}

export const specError = (spec: PipelineSpec, diagnostics: ReadonlyArray<Diagnostic>) =>
  new SpecError({ file: spec.file, diagnostics })
