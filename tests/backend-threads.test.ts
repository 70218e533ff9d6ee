/**
 * The threaded wasm binary and its fallback, each in a fresh process (the thread pool is
 * sized once per process): a process that used threads still exits on its own, a failed
 * threaded start falls back to one thread with a note, and all give the same numbers.
 */
import { execFile } from "node:child_process"
import path from "node:path"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"

const ROOT = path.resolve(__dirname, "..")

/** Starts wasm in a child process with `threads`, runs a training-sized matmul and its gradient. */
const runChild = async (threads: number, breakThreads: boolean) => {
  // CommonJS eval (ESM eval is refused next to --import): an async function for the awaits.
  const script = `(async () => {
    ${breakThreads ? "delete globalThis.SharedArrayBuffer" : ""}
    const { initBackend } = await import("./src/backend/select.ts")
    const tf = await import("@tensorflow/tfjs-core")
    const info = await initBackend({ backend: "wasm", threads: ${threads} })
    const a = tf.randomNormal([64, 96], 0, 1, "float32", 1)
    const b = tf.randomNormal([96, 80], 0, 1, "float32", 2)
    const [da] = tf.grads((x, y) => tf.sum(tf.square(tf.matMul(x, y))))([a, b])
    const sums = [tf.sum(tf.matMul(a, b)).dataSync()[0], tf.sum(tf.abs(da)).dataSync()[0]]
    console.log(JSON.stringify({ info, sums }))
  })()`
  const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", "-e", script], {
    cwd: ROOT,
    timeout: 60_000
  })
  return JSON.parse(stdout.trim().split("\n").pop() ?? "{}") as {
    info: { name: string; threads: number; notes: Array<string> }
    sums: [number, number]
  }
}

describe("wasm threads", () => {
  it("run threaded, fall back to one thread when the threaded start fails, and agree", async () => {
    const [threaded, single, fallback] = await Promise.all([runChild(2, false), runChild(1, false), runChild(2, true)])
    expect(threaded.info).toEqual({ name: "wasm", threads: 2, notes: [] })
    expect(single.info).toEqual({ name: "wasm", threads: 1, notes: [] })
    expect(fallback.info.threads).toBe(1)
    expect(fallback.info.notes.join(" ")).toMatch(/threaded binary failed \(SharedArrayBuffer is not defined\), using 1 thread/)
    for (const other of [single, fallback]) {
      expect(other.sums[0]).toBeCloseTo(threaded.sums[0], 3)
      expect(other.sums[1]).toBeCloseTo(threaded.sums[1], 1)
    }
  })
})
