/**
 * Choosing the TensorFlow.js backend: `tensorflow` (native libtensorflow, through the
 * optional `@tensorflow/tfjs-node`) when it loads, else `wasm` (SIMD, threaded when the
 * shims in `wasm-threads.ts` work), else `cpu` (plain JS: a correctness reference,
 * 25–50× slower than wasm). An explicit choice is honoured or fails loudly.
 */
import * as tf from "@tensorflow/tfjs-core"
import { BackendWasm, setThreadsCount, version_wasm } from "@tensorflow/tfjs-backend-wasm"
import { Data } from "effect"
import { availableParallelism } from "node:os"
import { registerGradients } from "./gradients.ts"
import { guardHeap, wasmInternals } from "./wasm-internals.ts"
import { installWasmKernels } from "./wasm-kernels.ts"
import { loadThreadedModule, type ThreadedModule, unrefThreads } from "./wasm-threads.ts"

export const BACKEND_NAMES = ["tensorflow", "wasm", "cpu"] as const
export type BackendName = (typeof BACKEND_NAMES)[number]
export type BackendChoice = BackendName | "auto"

export interface BackendOptions {
  /** `auto` (the default) tries tensorflow, wasm, cpu in that order. */
  readonly backend?: BackendChoice
  /** wasm threads; defaults to the number of cores. 1 skips the threaded binary. */
  readonly threads?: number
}

export interface BackendInfo {
  readonly name: BackendName
  /** Threads the wasm backend computes with (1 elsewhere: tensorflow manages its own). */
  readonly threads: number
  /** Why earlier candidates were passed over, or why wasm runs single-threaded. */
  readonly notes: ReadonlyArray<string>
}

/** The requested backend cannot be used. */
export class BackendUnavailable extends Data.TaggedError("BackendUnavailable")<{
  readonly backend: BackendName
  readonly reason: string
}> {
  override get message(): string {
    return `backend ${this.backend} is unavailable: ${this.reason}`
  }
}

/** Parses `--backend` / `PIPELINE_BACKEND`. */
export const parseBackendChoice = (value: string): BackendChoice | undefined => {
  const lower = value.trim().toLowerCase()
  return lower === "auto" || (BACKEND_NAMES as ReadonlyArray<string>).includes(lower) ? (lower as BackendChoice) : undefined
}

// A variable, so that TypeScript does not look for the types of an optional package.
const TFJS_NODE = "@tensorflow/tfjs-node"

const loadTensorflow = async (): Promise<void> => {
  try {
    await import(TFJS_NODE)
  } catch (error) {
    const reason = error instanceof Error ? error.message.split("\n")[0] : String(error)
    throw new BackendUnavailable({ backend: "tensorflow", reason: `${TFJS_NODE} does not load (${reason})` })
  }
  if (!(await tf.setBackend("tensorflow"))) {
    throw new BackendUnavailable({ backend: "tensorflow", reason: "its native library failed to initialise" })
  }
}

let wasmState: { threads: number; notes: ReadonlyArray<string> } | undefined

/** The version whose internals the wasm fixes are written against (package.json pins it). */
const WASM_VERSION = "4.22.0"

const loadWasm = async (threads: number): Promise<{ threads: number; notes: ReadonlyArray<string> }> => {
  if (wasmState !== undefined) {
    if (!(await tf.setBackend("wasm"))) throw new BackendUnavailable({ backend: "wasm", reason: "it failed to initialise" })
    const fixed = `wasm: the thread pool was sized once, at ${wasmState.threads}, when the backend started`
    return threads === wasmState.threads ? wasmState : { ...wasmState, notes: [...wasmState.notes, fixed] }
  }
  if (version_wasm !== WASM_VERSION) {
    const reason = `its fixes are written against tfjs-backend-wasm ${WASM_VERSION}, found ${version_wasm}`
    throw new BackendUnavailable({ backend: "wasm", reason })
  }
  installWasmKernels()
  const notes: Array<string> = []
  const singleThreaded = tf.findBackendFactory("wasm")
  let threaded: ThreadedModule | undefined
  // Replace the package's factory by one that tries the threaded binary first.
  tf.removeBackend("wasm")
  tf.registerBackend("wasm", async () => {
    if (threads > 1) {
      try {
        threaded = await loadThreadedModule(threads)
        setThreadsCount(threads)
        // Typed for tfjs's own loader, which we bypass; the module has what it needs.
        return new BackendWasm(threaded as unknown as ConstructorParameters<typeof BackendWasm>[0])
      } catch (error) {
        notes.push(`wasm: threaded binary failed (${error instanceof Error ? error.message : String(error)}), using 1 thread`)
        threaded?.PThread.terminateAllThreads()
        threaded = undefined
      }
    }
    setThreadsCount(1)
    return singleThreaded()
  }, 2)
  const listeners = processListeners()
  const ready = await tf.setBackend("wasm")
  removeNewListeners(listeners)
  if (!ready) throw new BackendUnavailable({ backend: "wasm", reason: "it failed to initialise" })
  const backend = wasmInternals(tf.backend())
  guardHeap(backend)
  if (threaded !== undefined) unrefThreads(threaded)
  wasmState = { threads: backend.wasm.tfjs.getThreadsCount(), notes }
  return wasmState
}

type Listener = (...args: Array<unknown>) => void
// Typed loosely: Node's overloads give each event its own listener type.
const crashListeners = (event: "uncaughtException" | "unhandledRejection"): Array<Listener> =>
  process.listeners(event as "uncaughtException") as Array<Listener>

const CRASH_EVENTS = ["uncaughtException", "unhandledRejection"] as const

const processListeners = () => CRASH_EVENTS.map((event) => new Set(crashListeners(event)))

/**
 * Emscripten installs process-wide handlers that rethrow every uncaught error and
 * rejection from inside its own code, so that any crash, ours included, is reported
 * at a minified 50 kB line of the wasm loader. Nothing of the backend depends on them.
 */
const removeNewListeners = (before: ReturnType<typeof processListeners>): void =>
  CRASH_EVENTS.forEach((event, i) => {
    for (const listener of crashListeners(event)) {
      if (!before[i]?.has(listener)) process.removeListener(event as "uncaughtException", listener)
    }
  })

const loadCpu = async (): Promise<void> => {
  // The cpu backend greets every Node user with an advert for tfjs-node; we choose knowingly.
  // PROD only silences tfjs's warnings (IS_TEST would also turn on strict leak checks).
  tf.env().set("PROD", true)
  if (!(await tf.setBackend("cpu"))) throw new BackendUnavailable({ backend: "cpu", reason: "it failed to initialise" })
}

/** Makes a backend current and says which. Safe to call again to switch. */
export const initBackend = async (options: BackendOptions = {}): Promise<BackendInfo> => {
  // Registers the cpu backend (a side effect of loading it), here rather than at import:
  // commands that never compute should not pay for TensorFlow.js.
  await import("@tensorflow/tfjs-backend-cpu")
  const choice = options.backend ?? "auto"
  const threads = Math.max(1, Math.floor(options.threads ?? availableParallelism()))
  const candidates: ReadonlyArray<BackendName> = choice === "auto" ? BACKEND_NAMES : [choice]
  const notes: Array<string> = []
  // After loading: tfjs-node brings the union package's gradients, which ours then leave be.
  const ready = (info: BackendInfo): BackendInfo => {
    registerGradients()
    return info
  }
  for (const name of candidates) {
    try {
      if (name === "tensorflow") {
        await loadTensorflow()
        return ready({ name, threads: 1, notes })
      }
      if (name === "wasm") {
        const wasm = await loadWasm(threads)
        return ready({ name, threads: wasm.threads, notes: [...notes, ...wasm.notes] })
      }
      await loadCpu()
      return ready({ name, threads: 1, notes })
    } catch (error) {
      if (choice !== "auto") throw error
      notes.push(error instanceof Error ? error.message : String(error))
    }
  }
  throw new BackendUnavailable({ backend: "cpu", reason: notes.join("; ") })
}
