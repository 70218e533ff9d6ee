/** Shared test fixtures: temp folders, pipeline files, and the CLI in a child process or in-process. */
/*
 * The program and the hub client are imported on first use, not here: most test files
 * want only the temp folders and the binary, and every test file imports this one.
 */
import { FetchHttpClient } from "@effect/platform"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Effect, Layer } from "effect"
import type * as Hub from "../src/hub/index.ts"
import { spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"

export const REPO = resolve(__dirname, "..")
export const SHARED = resolve(REPO, "../shared")
export const GSM8K_TEST = join(SHARED, "data/gsm8k/test.jsonl")
const BIN = join(REPO, "bin/pipeline.js")

export const tempDir = (prefix = "pipeline-test-"): string => mkdtempSync(join(tmpdir(), prefix))

/**
 * A temp folder inside this package, for plug-in modules: like a user's project,
 * it is an ES module package that resolves `effect` from node_modules.
 */
export const projectTempDir = (): string => {
  mkdirSync(join(REPO, ".test-tmp"), { recursive: true })
  return mkdtempSync(join(REPO, ".test-tmp", "p-"))
}

export const writeFile = (dir: string, name: string, text: string): string => {
  const file = join(dir, name)
  mkdirSync(dirname(file), { recursive: true })
  writeFileSync(file, text)
  return file
}

/** The example pipeline, over a given data file. */
export const samplePipeline = (dataPath: string, extra = ""): string => `name: sample
stages:
  data:
    uses: fetch
    with: { path: ${JSON.stringify(dataPath)} }
  shuffled:
    uses: shuffle
    needs: [data]
    with: { seed: 42 }
  short:
    uses: filter
    needs: [shuffled]
    with: { where: "question.length < 400" }
${extra}`

export interface CliResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * The real `pipeline` binary in a child process, without blocking this worker's event
 * loop (vitest's RPC must keep answering on a busy machine). Killed after `timeoutMs`.
 */
export const cliAsync = (args: ReadonlyArray<string>, options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> =>
  new Promise((done, fail) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: options.cwd ?? REPO,
      env: { ...process.env, ...options.env, FORCE_COLOR: "0" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 240_000)
    child.on("error", fail)
    child.on("close", (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr })
    })
  })

/** Starts the binary without waiting; for kill and lock tests. */
export const cliSpawn = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  spawn(process.execPath, [BIN, ...args], { cwd: REPO, env: { ...process.env, ...env, FORCE_COLOR: "0" }, stdio: ["ignore", "pipe", "pipe"] })

/** Lists a folder, or nothing when it is gone: the engine renames stages' work folders away as it commits them. */
const listing = (dir: string): ReadonlyArray<string> => {
  try {
    return readdirSync(dir)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return []
    throw error
  }
}

const hasCheckpoint = (work: string, checkpoint: RegExp): boolean =>
  listing(work).some((fp) => listing(join(work, fp)).some((name) => checkpoint.test(name)))

/**
 * Starts `pipeline run` and kills it (SIGKILL) as soon as a training checkpoint whose
 * name matches `checkpoint` appears in the cache's work folders: mid-training.
 */
export const runAndKillAtCheckpoint = async (args: ReadonlyArray<string>, cache: string, env: Record<string, string>, checkpoint = /^checkpoint-\d+$/): Promise<void> => {
  const child = cliSpawn(["run", ...args, "--cache-dir", cache], env)
  const exited = new Promise<void>((done) => child.on("exit", () => done()))
  await new Promise<void>((done, fail) => {
    const started = Date.now()
    const stop = (error?: Error) => {
      clearInterval(poll)
      child.kill("SIGKILL")
      if (error) fail(error)
      else done()
    }
    const poll = setInterval(() => {
      try {
        if (hasCheckpoint(join(cache, "work"), checkpoint)) stop()
        else if (child.exitCode !== null) stop(new Error(`pipeline run exited (${child.exitCode}) before a checkpoint appeared`))
        else if (Date.now() - started > 240_000) stop(new Error("no checkpoint appeared in 240 s"))
      } catch (error) {
        stop(error as Error)
      }
    }, 10)
  })
  await exited
}

/** The CLI in this process: the exit code, with stderr captured. */
export const cliInProcess = async (args: ReadonlyArray<string>): Promise<{ code: number; stdout: string; stderr: string }> => {
  const captured = { stdout: "", stderr: "" }
  const capture = (stream: NodeJS.WriteStream, key: "stdout" | "stderr") => {
    const original = stream.write.bind(stream)
    stream.write = ((chunk: string | Uint8Array) => {
      captured[key] += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString()
      return true
    }) as typeof stream.write
    return () => {
      stream.write = original
    }
  }
  const { runCommand } = await import("../src/program.ts")
  const restoreOut = capture(process.stdout, "stdout")
  const restoreErr = capture(process.stderr, "stderr")
  try {
    const code = await Effect.runPromise(runCommand(["node", "pipeline", ...args]).pipe(Effect.provide(NodeContext.layer)))
    return { code, ...captured }
  } finally {
    restoreOut()
    restoreErr()
  }
}

/** A plug-in stage that writes part of its output, then waits when $SLOW_STAGE is set: for crash tests. */
export const slowPlugin = (dir: string): string =>
  writeFile(dir, "slow.ts", `import { Effect, Schema } from "effect"
import { FileSystem } from "@effect/platform"
import { defineStage } from ${JSON.stringify(join(REPO, "src/stage.ts"))}
import { transformSplits } from ${JSON.stringify(join(REPO, "src/dataset.ts"))}

export default defineStage({
  name: "slow",
  version: "1",
  description: "passes its input through, slowly when asked",
  params: Schema.Struct({}),
  accepts: { kinds: ["dataset"], min: 1, max: 1 },
  produces: ["dataset"],
  run: (ctx) => Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    yield* fs.writeFileString(ctx.outDir + "/partial.txt", "half-written")
    if (process.env.SLOW_STAGE) {
      yield* Effect.sync(() => console.error("SLOW_STAGE_WAITING"))
      yield* Effect.sleep("60 seconds")
    }
    const dataset = yield* transformSplits(ctx, undefined, (table) => Effect.succeed(table))
    return { outputs: { dataset } }
  })
})
`)

/** Runs an Effect that needs the platform services. */
export const runNode = <A, E>(effect: Effect.Effect<A, E, NodeContext.NodeContext>): Promise<A> =>
  Effect.runPromise(effect.pipe(Effect.provide(NodeContext.layer)))

/** Runs an Effect that needs the platform services and the hub client (configured from the environment). */
export const runWithHub = async <A, E>(effect: Effect.Effect<A, E, NodeContext.NodeContext | Hub.Hub>): Promise<A> => {
  const { layer } = await import("../src/hub/index.ts")
  const hub = layer.pipe(Layer.provide(FetchHttpClient.layer), Layer.provide(NodeContext.layer))
  return Effect.runPromise(effect.pipe(Effect.provide(hub), Effect.provide(NodeContext.layer)))
}
