/**
 * The fingerprint of a stage run: the sha256 of the canonical JSON of all its
 * meaningful inputs (after wireit's `fingerprint.ts`):
 *
 * - the stage's identity and code version: its declared version and its module's whole
 *   import closure (each local file by content, each package by installed version; see
 *   code-version.ts),
 * - its params, decoded then re-encoded (defaults filled in, secrets removed),
 * - the content digest of each upstream stage's outputs, by `needs` name,
 * - the sha256 of each local file it reads,
 * - the version of each external input (a hub repository's resolved commit sha).
 *
 * Upstream stages enter by the digest of what they produced, not by their own
 * fingerprint: a re-run upstream that produced the same bytes re-runs nothing
 * below it, and a forced scrape that produced new bytes re-runs everything below.
 */
import { createHash } from "node:crypto"

/** Bump when the meaning of an entry changes in a way no stage version captures. */
export const ENGINE_VERSION = "2"

export interface FingerprintMaterial {
  readonly engine: string
  readonly stage: string
  readonly code: string
  /** What `code` covers, for explanations: file (relative to the stage module) → hash, `npm:<package>` → version. */
  readonly sources?: Readonly<Record<string, string>>
  readonly params: Readonly<Record<string, unknown>>
  /** upstream id → output digest */
  readonly inputs: Readonly<Record<string, string>>
  /** file path (relative to the pipeline file) → sha256 */
  readonly files: Readonly<Record<string, string>>
  /** external input → version */
  readonly external: Readonly<Record<string, string>>
}

/** JSON with object keys sorted at every depth: equal values give equal text. */
export const canonicalJson = (value: unknown): string => {
  if (value === null || typeof value !== "object") {
    if (typeof value === "number" && !Number.isFinite(value)) return JSON.stringify(String(value))
    return JSON.stringify(value) ?? "null"
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`
}

export const sha256 = (data: string | Uint8Array): string => createHash("sha256").update(data).digest("hex")

export const fingerprintOf = (material: FingerprintMaterial): string => sha256(canonicalJson(material))

/**
 * Why `current` differs from `previous`, in words a user acts on:
 * "param `seed` changed 42→7", "input `data` changed", "code version changed".
 */
export const explainChange = (previous: FingerprintMaterial | undefined, current: FingerprintMaterial): ReadonlyArray<string> => {
  if (previous === undefined) return ["never run"]
  const reasons: Array<string> = []
  if (previous.engine !== current.engine) reasons.push("engine version changed")
  if (previous.stage !== current.stage) reasons.push(`stage changed ${previous.stage}→${current.stage}`)
  else if (previous.code !== current.code) reasons.push(codeChange(previous, current))
  reasons.push(...diffValues(previous.params, current.params, "").map(({ path, before, after }) =>
    before === undefined
      ? `param \`${path}\` added (${show(after)})`
      : after === undefined
      ? `param \`${path}\` removed (was ${show(before)})`
      : `param \`${path}\` changed ${show(before)}→${show(after)}`
  ))
  for (const id of union(previous.inputs, current.inputs)) {
    if (!(id in previous.inputs)) reasons.push(`input \`${id}\` added`)
    else if (!(id in current.inputs)) reasons.push(`input \`${id}\` removed`)
    else if (previous.inputs[id] !== current.inputs[id]) reasons.push(`input \`${id}\` changed`)
  }
  for (const file of union(previous.files, current.files)) {
    if (!(file in previous.files)) reasons.push(`file \`${file}\` added`)
    else if (!(file in current.files)) reasons.push(`file \`${file}\` removed`)
    else if (previous.files[file] !== current.files[file]) reasons.push(`file \`${file}\` changed`)
  }
  for (const name of union(previous.external ?? {}, current.external)) {
    const before = previous.external?.[name]
    const after = current.external[name]
    if (before === undefined) reasons.push(`external \`${name}\` added (${after})`)
    else if (after === undefined) reasons.push(`external \`${name}\` removed`)
    else if (before !== after) reasons.push(`external \`${name}\` changed ${short(before)}→${short(after)}`)
  }
  return reasons
}

/** "code changed: ../src/random.ts", "code changed: package effect 3.1.0→3.2.0", or the declared version. */
const codeChange = (previous: FingerprintMaterial, current: FingerprintMaterial): string => {
  const [before, after] = [previous.code.split("+")[0], current.code.split("+")[0]]
  if (before !== after) return `code version changed ${before}→${after}`
  if (previous.sources === undefined || current.sources === undefined) return "code version changed"
  const changed = union(previous.sources, current.sources).filter((name) => previous.sources![name] !== current.sources![name])
  const described = changed.map((name) => {
    if (!name.startsWith("npm:")) {
      return !(name in previous.sources!) ? `${name} (new import)` : !(name in current.sources!) ? `${name} (no longer imported)` : name
    }
    const [was, now] = [previous.sources![name], current.sources![name]]
    return `package ${name.slice(4)} ${was ?? "(new)"}→${now ?? "(dropped)"}`
  })
  const shown = described.length > 4 ? [...described.slice(0, 4), `and ${described.length - 4} more`] : described
  return shown.length === 0 ? "code version changed" : `code changed: ${shown.join(", ")}`
}

const short = (version: string): string => (/^[0-9a-f]{40,64}$/.test(version) ? version.slice(0, 8) : version)

const union = (a: object, b: object): ReadonlyArray<string> => [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()

const show = (value: unknown): string => {
  const text = canonicalJson(value)
  return text.length > 40 ? `${text.slice(0, 37)}...` : text
}

interface ValueChange {
  readonly path: string
  readonly before: unknown
  readonly after: unknown
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)

const diffValues = (before: unknown, after: unknown, path: string): ReadonlyArray<ValueChange> => {
  if (isPlainObject(before) && isPlainObject(after)) {
    return union(before, after).flatMap((key) => diffValues(before[key], after[key], path === "" ? key : `${path}.${key}`))
  }
  return canonicalJson(before) === canonicalJson(after) ? [] : [{ path, before, after }]
}
