/**
 * The pipeline file: YAML → a typed spec, with every node's source position kept
 * so that later checks (params, `needs`, cycles) can point at file:line:col.
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect, Either, Schema } from "effect"
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node } from "yaml"
import { decodeWithDiagnostics, formatPath, type KeyPath, type Locate } from "./diagnostics.ts"
import { type Diagnostic, SpecError, suggestion, UsageError } from "./errors.ts"

const Identifier = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z_][A-Za-z0-9_-]*$/, {
    message: () => "must start with a letter or _ and hold only letters, digits, _ and -"
  })
)

const StageEntry = Schema.Struct({
  uses: Schema.String.annotations({
    description: "A built-in stage (fetch, tokenize, shuffle, …) or a path to a stage module (./stages/x.ts)"
  }),
  description: Schema.optional(Schema.String),
  needs: Schema.optional(Schema.Union(Identifier, Schema.Array(Identifier))).annotations({
    description: "The stages whose outputs this stage reads"
  }),
  with: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown })).annotations({
    description: "The stage's params"
  })
})

export const PipelineFile = Schema.Struct({
  name: Schema.optional(Identifier),
  description: Schema.optional(Schema.String),
  stages: Schema.Record({ key: Identifier, value: StageEntry })
})

export interface StageSpec {
  readonly id: string
  readonly uses: string
  readonly needs: ReadonlyArray<string>
  /** The raw `with:` block, to be decoded by the stage's own params Schema. */
  readonly with: unknown
}

export interface PipelineSpec {
  /** Absolute path of the pipeline file. */
  readonly file: string
  readonly baseDir: string
  readonly name: string
  /** In file order. */
  readonly stages: ReadonlyArray<StageSpec>
  readonly locate: Locate
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
  const doc = parseDocument(match[3]!)
  const value = documentValue(doc)
  if (doc.errors.length > 0 || Either.isLeft(value)) {
    const why = doc.errors[0]?.message.split("\n")[0] ?? (Either.isLeft(value) ? value.left.message : "")
    return Either.left(new UsageError({ message: `--set ${text}: the value is not valid YAML (${why})` }))
  }
  return Either.right({ stage: match[1]!, path: match[2]!.split("."), value: value.right, text })
}

const displayName = (file: string, cwd: string, path: Path.Path): string => {
  const relative = path.relative(cwd, file)
  return relative.startsWith("..") ? file : relative
}

export const loadSpec = (file: string, overrides: ReadonlyArray<Override> = []) =>
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
        diagnostics: doc.errors.map((e) => ({ location: at(e.pos[0]), path: "", message: e.message.split("\n")[0]! }))
      })
    }
    const overridden = new Map<string, string>()
    for (const override of overrides) {
      const stagesNode = doc.get("stages", true)
      const ids = isMap(stagesNode) ? stagesNode.items.flatMap((p) => (isScalar(p.key) ? [String(p.key.value)] : [])) : []
      if (!ids.includes(override.stage)) {
        return yield* new UsageError({
          message: `--set ${override.text}: there is no stage "${override.stage}" in ${shown}${suggestion(override.stage, ids)}`
        })
      }
      const target = ["stages", override.stage, "with", ...override.path]
      doc.setIn(target, doc.createNode(override.value))
      overridden.set(formatPath(target), override.text)
    }
    const locate: Locate = (keyPath, where) => {
      const formatted = formatPath(keyPath)
      for (const [target, text] of overridden) {
        if (formatted === target || formatted.startsWith(`${target}.`) || formatted.startsWith(`${target}[`)) return `--set ${text}`
      }
      const node = nodeAt(doc, keyPath, where)
      return node?.range ? at(node.range[0]) : shown
    }
    const plain = documentValue(doc)
    if (Either.isLeft(plain)) {
      return yield* new SpecError({
        file: absolute,
        diagnostics: [{ location: plain.left.offset === undefined ? shown : at(plain.left.offset), path: "", message: plain.left.message }]
      })
    }
    const decoded = decodeWithDiagnostics(PipelineFile, plain.right ?? {}, [], locate)
    if (Either.isLeft(decoded)) return yield* new SpecError({ file: absolute, diagnostics: decoded.left })
    const value = decoded.right
    const stages: Array<StageSpec> = Object.entries(value.stages).map(([id, entry]) => ({
      id,
      uses: entry.uses,
      needs: entry.needs === undefined ? [] : typeof entry.needs === "string" ? [entry.needs] : [...entry.needs],
      with: entry.with ?? {}
    }))
    if (stages.length === 0) {
      return yield* new SpecError({ file: absolute, diagnostics: [{ location: locate(["stages"], "value"), path: "stages", message: "a pipeline needs at least one stage" }] })
    }
    const name = value.name ?? path.basename(absolute).replace(/\.ya?ml$/, "")
    return { file: absolute, baseDir: path.dirname(absolute), name, stages, locate } satisfies PipelineSpec
  })

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
