/**
 * What a stage's code version covers: its module and every local file the module
 * imports, directly or not (its import closure), by content; and the version of every
 * package the closure imports from node_modules. Editing a helper that a plug-in
 * imports, or `src/random.ts` under `shuffle`, changes the code version of every stage
 * that reaches it, and only of those.
 *
 * esbuild finds the closure (its metafile lists each bundle's inputs), with packages
 * left external: their own files are not hashed, their installed version is. Files that
 * are loaded by URL rather than imported (a worker script:
 * `new URL("./worker.mjs", import.meta.url)`, or `sourceUrl("tokenizer/encode-worker.mjs")`
 * in this project's sources) are followed too, with their own imports.
 */
import { build, type Metafile } from "esbuild"
import { createHash } from "node:crypto"
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path"
import { fileURLToPath } from "node:url"
import { sourceUrl } from "./paths.ts"

export interface CodeClosure {
  /** Each local file of the closure, by path relative to the stage module's folder → sha256 (16 hex). */
  readonly files: Readonly<Record<string, string>>
  /** Each package the closure imports → its installed version. */
  readonly packages: Readonly<Record<string, string>>
}

/** Why a closure could not be found: the module does not parse, or imports a file that is missing. */
export class ClosureFailure {
  constructor(readonly message: string) {}
}

const digest = (bytes: Uint8Array | string): string => createHash("sha256").update(bytes).digest("hex").slice(0, 16)

/** `@scope/name/sub` → `@scope/name`; `name/sub` → `name`. */
const packageName = (specifier: string): string => {
  const parts = specifier.split("/")
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!
}

/** The installed version of `name` as Node would find it from `fromDir`, or "unknown". */
const packageVersion = (name: string, fromDir: string): string => {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const manifest = join(dir, "node_modules", name, "package.json")
    if (existsSync(manifest)) {
      try {
        const version = (JSON.parse(readFileSync(manifest, "utf8")) as { version?: unknown }).version
        return typeof version === "string" ? version : "unknown"
      } catch {
        return "unreadable"
      }
    }
    if (dirname(dir) === dir) return "not installed"
  }
}

const SCRIPT = /\.(?:[cm]?[jt]s|[jt]sx)$/

/** Files a source loads by URL instead of importing them; esbuild does not follow these. */
const loadedByUrl = (file: string, text: string): ReadonlyArray<string> => {
  const found: Array<string> = []
  for (const match of text.matchAll(/new URL\(\s*["'`](\.{1,2}\/[^"'`]+)["'`]\s*,\s*import\.meta\.url\s*\)/g)) {
    found.push(resolve(dirname(file), match[1]!))
  }
  for (const match of text.matchAll(/\bsourceUrl\(\s*["'`]([^"'`]+)["'`]\s*\)/g)) {
    found.push(fileURLToPath(sourceUrl(match[1]!)))
  }
  return found.filter((f) => f !== file && SCRIPT.test(f) && existsSync(f))
}

/** Each entry's inputs (absolute paths) and external imports, in one esbuild pass. */
const metafileOf = async (entries: ReadonlyArray<string>): Promise<Metafile> => {
  const result = await build({
    entryPoints: [...entries],
    absWorkingDir: "/",
    outdir: "/nonexistent-out",
    bundle: true,
    write: false,
    metafile: true,
    platform: "node",
    format: "esm",
    packages: "external",
    logLevel: "silent"
  }).catch((error: { errors?: ReadonlyArray<{ text: string; location?: { file: string; line: number } | null }> }) => {
    const first = error.errors?.[0]
    throw new ClosureFailure(
      first === undefined ? String(error) : `${first.location ? `${first.location.file}:${first.location.line}: ` : ""}${first.text}`
    )
  })
  return result.metafile!
}

const absolute = (p: string): string => (isAbsolute(p) ? p : resolve("/", p))

/**
 * The closures of several modules (absolute paths) at once: one esbuild pass, then
 * another for each round of files loaded by URL.
 */
export const codeClosures = async (modules: ReadonlyArray<string>, memoFile?: string): Promise<ReadonlyMap<string, CodeClosure>> => {
  // The import graph is a function of the files' contents: a graph found before (in this
  // process, or by an earlier one in `memoFile`) is reused while every file in it reads
  // the same. The files are read and hashed each time; only esbuild's pass is saved.
  const key = graphKey(modules)
  const known = remembered.get(key) ?? (memoFile === undefined ? undefined : readMemo(memoFile, key))
  const graph: Map<string, GraphNode> = known !== undefined && unchanged(known) ? known.graph : new Map()
  let pending = graph.size > 0 ? [] : [...new Set(modules)]
  while (pending.length > 0) {
    const meta = await metafileOf(pending)
    for (const [name, input] of Object.entries(meta.inputs)) {
      const file = absolute(name)
      // Skip esbuild's virtual modules (namespaces other than files).
      if (graph.has(file) || !existsSync(file)) continue
      const text = readFileSync(file, "utf8")
      graph.set(file, {
        imports: [...input.imports.filter((i) => !i.external).map((i) => absolute(i.path)), ...loadedByUrl(file, text)],
        packages: input.imports.filter((i) => i.external && !i.path.startsWith("node:")).map((i) => packageName(i.path))
      })
    }
    pending = [...new Set([...graph.values()].flatMap((node) => node.imports))].filter((f) => !graph.has(f))
  }
  const hashes = new Map<string, string>()
  const hashOf = (file: string) => {
    let hash = hashes.get(file)
    if (hash === undefined) {
      hash = digest(readFileSync(file))
      hashes.set(file, hash)
    }
    return hash
  }
  const closures = new Map<string, CodeClosure>()
  for (const module of modules) {
    const base = dirname(module)
    const files: Record<string, string> = {}
    const packages: Record<string, string> = {}
    const stack = [module]
    const seen = new Set<string>()
    while (stack.length > 0) {
      const file = stack.pop()!
      if (seen.has(file)) continue
      seen.add(file)
      const node = graph.get(file)
      files[relative(base, file).split(sep).join("/")] = hashOf(file)
      if (node === undefined) continue
      for (const name of node.packages) packages[name] ??= packageVersion(name, dirname(file))
      stack.push(...node.imports)
    }
    closures.set(module, { files: sorted(files), packages: sorted(packages) })
  }
  const found = { graph, hashes: new Map([...graph.keys()].map((file) => [file, hashOf(file)])) }
  remembered.set(key, found)
  if (memoFile !== undefined && found !== known) writeMemo(memoFile, key, found)
  return closures
}

interface Remembered {
  readonly graph: Map<string, GraphNode>
  readonly hashes: ReadonlyMap<string, string>
}

/** What `memoFile` holds: import graphs by the modules they were found for (at most MEMO_GRAPHS). */
interface MemoFile {
  readonly format: 1
  readonly graphs: Record<string, Record<string, GraphNode & { readonly hash: string }>>
}

const MEMO_GRAPHS = 32

const loadMemo = (memoFile: string): MemoFile | undefined => {
  try {
    const memo = JSON.parse(readFileSync(memoFile, "utf8")) as MemoFile
    return memo.format === 1 && typeof memo.graphs === "object" && memo.graphs !== null ? memo : undefined
  } catch {
    return undefined
  }
}

/** A graph from the memo file; anything malformed there is simply not used (esbuild runs instead). */
const readMemo = (memoFile: string, key: string): Remembered | undefined => {
  const nodes = loadMemo(memoFile)?.graphs[key]
  if (typeof nodes !== "object" || nodes === null) return undefined
  const graph = new Map<string, GraphNode>()
  const hashes = new Map<string, string>()
  for (const [file, node] of Object.entries(nodes)) {
    const strings = (v: unknown): v is ReadonlyArray<string> => Array.isArray(v) && v.every((x) => typeof x === "string")
    if (!isAbsolute(file) || typeof node?.hash !== "string" || !strings(node.imports) || !strings(node.packages)) return undefined
    graph.set(file, { imports: node.imports, packages: node.packages })
    hashes.set(file, node.hash)
  }
  return graph.size > 0 ? { graph, hashes } : undefined
}

/** Best effort: a memo that cannot be written costs the next run one esbuild pass. */
const writeMemo = (memoFile: string, key: string, found: Remembered): void => {
  if (!existsSync(dirname(memoFile))) return
  const previous = loadMemo(memoFile)?.graphs ?? {}
  const kept = Object.entries(previous).filter(([k]) => k !== key).slice(-(MEMO_GRAPHS - 1))
  const nodes = Object.fromEntries([...found.graph].map(([file, node]) => [file, { ...node, hash: found.hashes.get(file)! }]))
  const memo: MemoFile = { format: 1, graphs: { ...Object.fromEntries(kept), [key]: nodes } }
  const temp = `${memoFile}.${process.pid}.${Date.now()}.tmp`
  try {
    writeFileSync(temp, JSON.stringify(memo))
    renameSync(temp, memoFile)
  } catch {
    rmSync(temp, { force: true })
  }
}

interface GraphNode {
  readonly imports: ReadonlyArray<string>
  readonly packages: ReadonlyArray<string>
}

const remembered = new Map<string, Remembered>()

const graphKey = (modules: ReadonlyArray<string>): string => [...new Set(modules)].sort().join("\0")

const unchanged = (known: { readonly hashes: ReadonlyMap<string, string> }): boolean =>
  [...known.hashes].every(([file, hash]) => {
    try {
      return digest(readFileSync(file)) === hash
    } catch {
      return false
    }
  })

const sorted = (record: Record<string, string>): Record<string, string> =>
  Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))

/** The hash a code version carries: 16 hex over the closure. */
export const closureHash = (closure: CodeClosure): string =>
  digest(JSON.stringify({ files: closure.files, packages: closure.packages }))
