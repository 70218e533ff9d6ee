/**
 * Sweeps. A stage's `matrix:` makes one stage per combination of its values (the
 * cartesian product, axes in file order), each with an id that says what it sets:
 * `train[learning_rate=2e-5,lora.r=16]`. Everything downstream of a swept stage runs
 * once per combination too, under the same label (`evaluate[learning_rate=2e-5,lora.r=16]`),
 * reading that variant's outputs; a stage below two swept stages runs once per pair.
 * Stages above every sweep stay single and are shared by all variants.
 *
 * Expansion happens before params are decoded, so each variant's params are checked
 * by the stage's own Schema; `toFile` maps a variant's key paths back to where the
 * file says them (the `matrix:` value for a swept param), so problems stay located.
 */
import { Effect } from "effect"
import type { KeyPath, ToFile } from "./diagnostics.ts"
import { UsageError } from "./errors.ts"
import type { MatrixValue, StageSpec } from "./spec.ts"

/** What a variant is: its base stage in the file, and what its label sets (label key → value). */
export interface Variant {
  readonly base: string
  readonly params: Readonly<Record<string, MatrixValue>>
}

/** A stage of the expanded graph: one per file stage, or one per combination below a sweep. */
interface ExpandedStage {
  readonly id: string
  /** The file's stage it comes from. */
  readonly spec: StageSpec
  readonly needs: ReadonlyArray<string>
  /** The base `with:`, with this variant's swept values set. */
  readonly with: unknown
  readonly variant?: Variant
  /** For each axis of the stage's own matrix, the index of the value this variant takes. */
  readonly picks: ReadonlyArray<number>
}

/**
 * A value as it reads in an id: strings as they are (quoted when they could pass for a
 * number, a boolean, or hold the id's own punctuation), numbers in the shorter of their
 * plain and exponent forms (`2e-5`, not `0.00002`; integers stay plain: `1000`).
 */
export const formatValue = (value: MatrixValue): string => {
  if (typeof value === "boolean") return String(value)
  if (typeof value === "string") {
    const ambiguous = value === "" || /[[\],="\\\s]/.test(value) || value === "true" || value === "false" || (value.trim() !== "" && !Number.isNaN(Number(value)))
    return ambiguous ? JSON.stringify(value) : value
  }
  const plain = String(value).replace("e+", "e")
  if (Number.isInteger(value) || !Number.isFinite(value)) return plain
  const exponent = value.toExponential().replace("e+", "e")
  return exponent.length < plain.length ? exponent : plain
}

/** `learning_rate=2e-5,lora.r=16`: what goes between a variant id's brackets. */
export const labelOf = (params: Readonly<Record<string, MatrixValue>>): string =>
  Object.entries(params).map(([key, value]) => `${key}=${formatValue(value)}`).join(",")

const product = <A>(lists: ReadonlyArray<ReadonlyArray<A>>): ReadonlyArray<ReadonlyArray<A>> =>
  lists.reduce<ReadonlyArray<ReadonlyArray<A>>>((combos, list) => combos.flatMap((combo) => list.map((item) => [...combo, item])), [[]])

const isObject = (value: unknown): value is { readonly [key: string]: unknown } =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** `target` with `value` at `path`, maps created where keys are missing; `target` itself is left as it is. */
const setAt = (target: unknown, path: ReadonlyArray<string>, value: MatrixValue): unknown => {
  const [head, ...rest] = path
  if (head === undefined) return value
  const map = isObject(target) ? target : {}
  return { ...map, [head]: setAt(map[head], rest, value) }
}

const startsWith = (path: KeyPath, prefix: ReadonlyArray<string>): boolean =>
  prefix.length <= path.length && prefix.every((key, i) => path[i] === key)

/**
 * The stages with every sweep expanded, in file order (variants in product order).
 * A graph with a dangling need or a cycle expands as far as it can: those are
 * reported by `checkGraph`, and the params can still be checked meanwhile.
 */
export const expandMatrix = (stages: ReadonlyArray<StageSpec>): ReadonlyArray<ExpandedStage> => {
  const byId = new Map(stages.map((s) => [s.id, s]))
  const fileOrder = new Map(stages.map((s, i) => [s.id, i]))
  // The swept stages at or above each stage, in file order.
  const origins = new Map<string, ReadonlyArray<string>>()
  const visiting = new Set<string>()
  const originsOf = (id: string): ReadonlyArray<string> => {
    const known = origins.get(id)
    const stage = byId.get(id)
    if (known !== undefined || stage === undefined || visiting.has(id)) return known ?? []
    visiting.add(id)
    const found = new Set([...(stage.matrix.length > 0 ? [id] : []), ...stage.needs.flatMap(originsOf)])
    visiting.delete(id)
    const sorted = [...found].sort((a, b) => fileOrder.get(a)! - fileOrder.get(b)!)
    origins.set(id, sorted)
    return sorted
  }

  /** The label of a stage below `from` under one combination (origin → the index of each of its axes' values). */
  const paramsOf = (from: ReadonlyArray<string>, combination: ReadonlyMap<string, ReadonlyArray<number>>): Record<string, MatrixValue> => {
    const axes = from.flatMap((origin) => byId.get(origin)!.matrix.map((axis, i) => ({ origin, axis, value: axis.values[combination.get(origin)![i]!]! })))
    const keys = axes.map(({ axis }) => axis.key)
    // Two sweeps of the same key name are told apart by their stage: `train.learning_rate`;
    // if that still names two axes (another sweeps `train.learning_rate`), every key is.
    const clashes = (key: string) => keys.indexOf(key) !== keys.lastIndexOf(key)
    const short = axes.map(({ origin, axis }) => (clashes(axis.key) ? `${origin}.${axis.key}` : axis.key))
    const labels = new Set(short).size === short.length ? short : axes.map(({ origin, axis }) => `${origin}.${axis.key}`)
    return Object.fromEntries(axes.map(({ value }, i) => [labels[i]!, value]))
  }
  const idOf = (id: string, combination: ReadonlyMap<string, ReadonlyArray<number>>): string => {
    const from = originsOf(id)
    return from.length === 0 ? id : `${id}[${labelOf(paramsOf(from, combination))}]`
  }

  return stages.flatMap((stage): ReadonlyArray<ExpandedStage> => {
    const from = originsOf(stage.id)
    if (from.length === 0) return [{ id: stage.id, spec: stage, needs: stage.needs, with: stage.with, picks: [] }]
    const perOrigin = from.map((origin) => product(byId.get(origin)!.matrix.map((axis) => axis.values.map((_, i) => i))))
    return product(perOrigin).map((picked) => {
      const combination = new Map(from.map((origin, i) => [origin, picked[i]!]))
      const picks = combination.get(stage.id) ?? []
      return {
        id: idOf(stage.id, combination),
        spec: stage,
        needs: stage.needs.map((need) => idOf(need, combination)),
        with: stage.matrix.reduce<unknown>((params, axis, i) => setAt(params, axis.path, axis.values[picks[i]!]!), stage.with),
        variant: { base: stage.id, params: paramsOf(from, combination) },
        picks
      }
    })
  })
}

/**
 * Where each key path of the expanded stages is written in the file: a variant's
 * swept param at its `matrix:` value (or key), anything else at its base stage.
 */
export const toFileOf = (expanded: ReadonlyArray<ExpandedStage>): ToFile => {
  const byId = new Map(expanded.map((s) => [s.id, s]))
  return (path, at) => {
    const stage = path[0] === "stages" && typeof path[1] === "string" ? byId.get(path[1]) : undefined
    if (stage === undefined || stage.variant === undefined) return path
    const rest = path.slice(2)
    const axis = rest[0] === "with" ? stage.spec.matrix.findIndex((a) => startsWith(rest.slice(1), a.path)) : -1
    if (axis < 0) return ["stages", stage.spec.id, ...rest]
    const key = stage.spec.matrix[axis]!.key
    return at === "key" && rest.length - 1 === stage.spec.matrix[axis]!.path.length
      ? ["stages", stage.spec.id, "matrix", key]
      : ["stages", stage.spec.id, "matrix", key, stage.picks[axis]!]
  }
}

interface Named {
  readonly id: string
  readonly variant?: Variant
}

/**
 * The stages a command-line id names: a stage or a variant by its id, or every variant
 * of a swept stage by its base id (`train`). Undefined when it names none.
 */
export const resolveStageIds = (pipeline: { readonly stages: ReadonlyArray<Named> }, id: string): ReadonlyArray<string> | undefined => {
  if (pipeline.stages.some((s) => s.id === id)) return [id]
  const variants = pipeline.stages.filter((s) => s.variant?.base === id).map((s) => s.id)
  return variants.length > 0 ? variants : undefined
}

/** The ids a command line may name, for error messages: `data, train (variants: train[a=1], train[a=2])`. */
export const describeStageIds = (pipeline: { readonly stages: ReadonlyArray<Named> }): string => {
  const bases = [...new Set(pipeline.stages.map((s) => s.variant?.base ?? s.id))]
  return bases.map((base) => {
    const variants = pipeline.stages.filter((s) => s.variant?.base === base).map((s) => s.id)
    return variants.length === 0 ? base : `${base} (variants: ${variants.join(", ")})`
  }).join(", ")
}

/** The one stage `show` prints: a stage's or a variant's id; a swept stage's base id names several, so the user picks one. */
export const requireOneStage = (
  pipeline: { readonly stages: ReadonlyArray<Named>; readonly spec?: { readonly stages: ReadonlyArray<{ readonly id: string; readonly matrix: ReadonlyArray<unknown> }> } },
  id: string,
  file: string
): Effect.Effect<void, UsageError> => {
  const ids = resolveStageIds(pipeline, id)
  if (ids === undefined) return Effect.fail(new UsageError({ message: `there is no stage "${id}" in ${file} (stages: ${describeStageIds(pipeline)})` }))
  return ids.length === 1 && ids[0] === id
    ? Effect.void
    : Effect.fail(new UsageError({
      message: `stage "${id}" ${sweptHere(pipeline, id) ? "is swept by matrix:" : "runs once per variant of a sweep above it:"} into ${ids.length} variant(s): name one of ${ids.join(", ")}`
    }))
}

/** Whether the stage's own `matrix:` sweeps it (else a sweep above it does). */
const sweptHere = (pipeline: { readonly spec?: { readonly stages: ReadonlyArray<{ readonly id: string; readonly matrix: ReadonlyArray<unknown> }> } }, base: string): boolean =>
  (pipeline.spec?.stages.find((s) => s.id === base)?.matrix.length ?? 0) > 0

/** An id as a shell word: a variant's brackets and commas are quoted (zsh would glob them). */
export const shellWord = (id: string): string => (/^[A-Za-z0-9_./:=-]+$/.test(id) ? id : `'${id.replace(/'/g, `'\\''`)}'`)
