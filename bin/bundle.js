/**
 * The start-up bundle: src/ and the built-in stages compiled by esbuild into
 * dist/<key>/, where <key> hashes every source file, the lockfile, Node's version and
 * this file. Node then loads a few tree-shaken files instead of resolving and compiling
 * hundreds of modules (effect's and @effect/platform's barrels alone take over a
 * second) through tsx's loader: a fully cached `pipeline run` drops from about 3 s to
 * well under 1.
 *
 * Each change of source builds a new key (about a second, once), so the bundle is never
 * stale; builds are written to a temporary folder and renamed into place, so concurrent
 * processes never see half a bundle. Stages load as separate chunks, and their heavy
 * dependencies (TensorFlow.js, the tokenizer) only when a stage runs.
 * PIPELINE_FROM_SOURCE=1 skips the bundle (tsx compiles src/ on the fly instead).
 */
import { createHash } from "node:crypto"
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs"
import { dirname, join, relative } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..")
const DIST = join(ROOT, "dist")
/** Bundles not used for this long are removed (a run loads its chunks as it starts). */
const KEEP_MS = 3600 * 1000

const walk = (dir, files) => {
  for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) walk(path, files)
    else files.push(path)
  }
  return files
}

/** What the bundle is built from: a change to any of these builds a new one. */
const bundleKey = () => {
  const hash = createHash("sha256")
  hash.update(`${process.version}\0${ROOT}\0`)
  for (const file of [...walk(join(ROOT, "src"), []), ...walk(join(ROOT, "stages"), []), join(ROOT, "package-lock.json"), fileURLToPath(import.meta.url)]) {
    if (!existsSync(file)) continue
    hash.update(`${relative(ROOT, file)}\0`)
    hash.update(readFileSync(file))
    hash.update("\0")
  }
  return hash.digest("hex").slice(0, 16)
}

/**
 * TensorFlow.js takes about a quarter of a second to load, and most commands (a cached
 * run, status, dag) never compute. In the bundle, every `@tensorflow/*` import becomes
 * a stand-in that loads the real package (CommonJS, from node_modules) on first use.
 * esbuild reads a CommonJS module's exports when it is imported: the stand-in lists none
 * and answers every lookup through its prototype, which loads the package. Side-effect
 * imports would be lost this way: the code loads those itself, with `await import()`.
 */
const lazyTensorflow = {
  name: "lazy-tensorflow",
  setup(build) {
    build.onResolve({ filter: /^@tensorflow\/tfjs-(core|backend-wasm|backend-cpu)$/ }, (args) =>
      args.kind === "dynamic-import" ? { path: args.path, external: true } : { path: args.path, namespace: "lazy-tensorflow" })
    build.onLoad({ filter: /.*/, namespace: "lazy-tensorflow" }, (args) => ({
      loader: "js",
      contents: `let real
const load = () => (real ??= __pipelineLoad(${JSON.stringify(args.path)}))
const lookup = new Proxy({}, { get: (_, key) => load()[key], has: (_, key) => key in load() })
module.exports = new Proxy({}, { get: (_, key) => load()[key], has: (_, key) => key in load(), ownKeys: () => [], getPrototypeOf: () => lookup })
`
    }))
  }
}

const build = async (outdir) => {
  const { build: esbuild } = await import("esbuild")
  await esbuild({
    entryPoints: { main: join(ROOT, "src/main.ts") },
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    outdir,
    // TensorFlow.js finds its wasm binaries and native library next to its own files;
    // tsx is loaded only for TypeScript plug-ins.
    external: ["@tensorflow/*", "tsx", "tsx/*", "esbuild"],
    // CommonJS dependencies (yaml, jexl, cli-progress) call require().
    banner: { js: "import { createRequire as __pipelineRequire } from 'node:module'; const require = __pipelineRequire(import.meta.url); const __pipelineLoad = require;" },
    plugins: [lazyTensorflow],
    // Where the registry finds the built-in stages' sources to hash them.
    define: { __PIPELINE_ROOT__: JSON.stringify(pathToFileURL(`${ROOT}/`).href) },
    logLevel: "silent",
    legalComments: "none",
    minify: true,
    keepNames: true
  })
}

const removeOld = (keep) => {
  const now = Date.now()
  for (const name of readdirSync(DIST)) {
    if (name === keep) continue
    const path = join(DIST, name)
    try {
      if (name.startsWith(".tmp-") ? now - statSync(path).mtimeMs > 3600_000 : now - statSync(path).mtimeMs > KEEP_MS) {
        rmSync(path, { recursive: true, force: true })
      }
    } catch {
      // another process got there first
    }
  }
}

/** The bundle's entry file, built if need be; undefined when it cannot be (the caller runs from source). */
export const bundleEntry = async () => {
  if (process.env.PIPELINE_FROM_SOURCE === "1") return undefined
  try {
    const key = bundleKey()
    const dir = join(DIST, key)
    const entry = join(dir, "main.js")
    if (existsSync(entry)) {
      const now = new Date()
      utimesSync(dir, now, now) // in use: keep it
      return pathToFileURL(entry).href
    }
    mkdirSync(DIST, { recursive: true })
    const temporary = join(DIST, `.tmp-${process.pid}-${Date.now()}`)
    await build(temporary)
    writeFileSync(join(temporary, "package.json"), '{ "type": "module" }\n')
    try {
      renameSync(temporary, dir)
    } catch {
      rmSync(temporary, { recursive: true, force: true }) // a concurrent build won; use its bundle
    }
    if (!existsSync(entry)) return undefined
    removeOld(key)
    return pathToFileURL(entry).href
  } catch (error) {
    process.stderr.write(`note: the start-up bundle could not be built (${error instanceof Error ? error.message.split("\n")[0] : String(error)}); running from source, which starts slower\n`)
    return undefined
  }
}
