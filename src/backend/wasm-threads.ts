/**
 * Loading tfjs's multi-threaded SIMD wasm binary in Node.
 *
 * Why this exists: tfjs's feature check answers "no threads" whenever it runs in Node,
 * and its loader hands emscripten a Blob URL for the worker script, which Node's
 * `worker_threads` cannot load. Threads roughly double matmul speed on two cores.
 *
 * What we do instead of tfjs's `init()` (all tied to tfjs-backend-wasm 4.22.0, pinned):
 * - load the emscripten factory from `wasm-out/` ourselves; the worker threads
 *   re-import that same file by path, so no Blob is needed for the main script;
 * - write the worker script (shipped as a string) to a temporary file;
 * - report twice the wanted thread count as "logical cores": the C++ side halves it
 *   (assuming hyper-threads) and caps the pool there, which on two cores means one;
 * - attach the same `tfjs` bridge functions tfjs's `init()` attaches.
 * Any failure is reported to the caller, which falls back to the single-threaded binary.
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"

const require = createRequire(import.meta.url)
const WASM_OUT = "@tensorflow/tfjs-backend-wasm/wasm-out/"
const BINARY = "tfjs-backend-wasm-threaded-simd.wasm"

type Factory = (config: Record<string, unknown>) => Promise<ThreadedModule>

/** Typed by hand: this project's libs (no DOM) leave WebAssembly untyped. */
interface WebAssemblyApi {
  instantiate(binary: Uint8Array, imports: object): Promise<{ instance: object; module: object }>
}
const wasmApi = (globalThis as unknown as { WebAssembly: WebAssemblyApi }).WebAssembly

export interface ThreadedModule {
  cwrap(name: string, returnType: string | null, argTypes: ReadonlyArray<string>): (...args: Array<unknown>) => unknown
  tfjs?: Record<string, (...args: Array<unknown>) => unknown>
  PThread: { terminateAllThreads(): void; runningWorkers: Array<{ unref(): void }> }
}

let workerScript: string | undefined

const writeWorkerScript = (): string => {
  if (workerScript !== undefined) return workerScript
  const { wasmWorkerContents } = require(`${WASM_OUT}tfjs-backend-wasm-threaded-simd.worker.js`) as {
    wasmWorkerContents: string
  }
  // .cjs: the script uses `require` and `__filename`, whatever package.json says.
  const path = join(mkdtempSync(join(tmpdir(), "tfjs-wasm-")), "worker.cjs")
  // The shipped string holds raw newlines inside string literals; tfjs escapes them too.
  writeFileSync(path, wasmWorkerContents.replace(/\n/g, "\\n"))
  workerScript = path
  return path
}

/** Instantiates the threaded module with a pool of `threads` threads, or rejects within `timeoutMs`. */
export const loadThreadedModule = async (threads: number, timeoutMs = 20_000): Promise<ThreadedModule> => {
  const factoryPath = require.resolve(`${WASM_OUT}tfjs-backend-wasm-threaded-simd.js`)
  const factory = require(factoryPath) as Factory
  const binary = readFileSync(join(dirname(factoryPath), BINARY))
  const worker = writeWorkerScript()
  // emscripten uses the config object itself as the Module: keep it to clean up on failure.
  const config: Record<string, unknown> = {
    locateFile: (path: string, prefix: string) => (path.endsWith(".worker.js") ? worker : prefix + path),
    instantiateWasm: (imports: { env: Record<string, unknown> }, receive: (instance: object, module: object) => void) => {
      imports.env["emscripten_num_logical_cores"] = () => 2 * threads
      wasmApi.instantiate(binary, imports).then(
        ({ instance, module }) => receive(instance, module),
        (error: unknown) => failed(error)
      )
      return {}
    }
  }
  let failed: (error: unknown) => void = () => undefined
  let timer: NodeJS.Timeout | undefined
  const failure = new Promise<never>((_, reject) => {
    failed = reject
    timer = setTimeout(() => reject(new Error(`threaded wasm did not start within ${timeoutMs} ms`)), timeoutMs)
  })
  try {
    const module = await Promise.race([factory(config), failure])
    attachBridge(module)
    return module
  } catch (error) {
    ;(config["PThread"] as ThreadedModule["PThread"] | undefined)?.terminateAllThreads()
    throw error
  } finally {
    clearTimeout(timer)
  }
}

/** The same functions tfjs's own `init()` puts on `module.tfjs`, which `BackendWasm` calls. */
const attachBridge = (module: ThreadedModule): void => {
  module.tfjs = {
    init: module.cwrap("init", null, []),
    initWithThreadsCount: module.cwrap("init_with_threads_count", null, ["number"]),
    getThreadsCount: module.cwrap("get_threads_count", "number", []),
    registerTensor: module.cwrap("register_tensor", null, ["number", "number", "number"]),
    disposeData: module.cwrap("dispose_data", null, ["number"]),
    dispose: module.cwrap("dispose", null, [])
  }
}

/**
 * Lets the process exit while the pool's threads wait for work. Emscripten keeps a
 * running thread referenced, so a CLI run or a test file would otherwise never end.
 */
export const unrefThreads = (module: ThreadedModule): void => {
  for (const worker of module.PThread.runningWorkers) worker.unref()
}
