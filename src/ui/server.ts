/**
 * `pipeline ui`: a local web page of the pipeline, served on 127.0.0.1 by
 * @effect/platform's HttpServer. The cache is its only database: every request reads
 * the store as `status` does, so a CLI run beside it shows up at the next poll. The
 * page's script (src/ui/client.ts, with uPlot for the curves) is bundled by esbuild at
 * start: nothing is fetched from a CDN, and the page works with no network.
 */
import { HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer, Schema } from "effect"
import { spawn } from "node:child_process"
import { createServer } from "node:http"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { existsSync, readFileSync } from "node:fs"
import { loadPipeline } from "../pipeline.ts"
import type { Override } from "../spec.ts"
import { pipelineState, stageDetail } from "./state.ts"

export interface UiOptions {
  readonly file: string
  readonly overrides: ReadonlyArray<Override>
  readonly cacheDir: string
  readonly host: string
  readonly port: number
  readonly codeMemo: string
  /** Open the page in the default browser once it listens. */
  readonly open: boolean
}

const here = dirname(fileURLToPath(import.meta.url))

/** The package root: where src/ui/client.ts and bin/pipeline.js are, from the sources or the bundle. */
const root = (): string => {
  for (let dir = here; ; dir = resolve(dir, "..")) {
    if (existsSync(join(dir, "src/ui/client.ts"))) return dir
    if (resolve(dir, "..") === dir) throw new Error("cannot find the page's sources (src/ui/client.ts)")
  }
}

/** The page's script and styles, bundled once. */
const bundle = Effect.promise(async () => {
  const { build } = await import("esbuild")
  const base = root()
  const result = await build({
    entryPoints: [join(base, "src/ui/client.ts")],
    bundle: true,
    format: "iife",
    platform: "browser",
    target: "es2022",
    write: false,
    minify: true,
    logLevel: "silent"
  })
  const css = readFileSync(join(base, "node_modules/uplot/dist/uPlot.min.css"), "utf8")
  return { js: result.outputFiles[0]!.text, css, bin: join(base, "bin/pipeline.js") }
})

const PAGE = (name: string) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${name.replace(/[<&>"]/g, "")} · pipeline</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/app.css"></head>
<body><div id="app">loading…</div><script src="/app.js"></script></body></html>`

const RunRequest = Schema.Struct({ stage: Schema.optional(Schema.String) })

export const serve = (options: UiOptions) =>
  Effect.gen(function* () {
    const assets = yield* bundle
    const load = loadPipeline(options.file, options.overrides, { codeMemo: options.codeMemo })
    const pipeline0 = yield* load
    let running: { readonly pid: number; readonly stage: string | null; readonly startedAt: string } | undefined
    let lastRunError: string | null = null
    const json = (value: unknown, status = 200) => HttpServerResponse.unsafeJson(value, { status })
    const router = HttpRouter.empty.pipe(
      HttpRouter.get("/", HttpServerResponse.html(PAGE(pipeline0.spec.name))),
      HttpRouter.get("/app.js", HttpServerResponse.text(assets.js, { contentType: "text/javascript" })),
      HttpRouter.get("/app.css", HttpServerResponse.text(assets.css, { contentType: "text/css" })),
      HttpRouter.get(
        "/api/state",
        Effect.gen(function* () {
          // The file is read anew each time: an edit, or a run beside the page, shows at once.
          const pipeline = yield* load
          const state = yield* pipelineState(pipeline)
          // A run from the CLI shows in `state.running` (the store's live file) as one from here does.
          return json({ ...state, lastRunError })
        })
      ),
      HttpRouter.get(
        "/api/stages/:id",
        Effect.gen(function* () {
          const { id } = yield* HttpRouter.params
          const pipeline = yield* load
          // Only a stage of this pipeline: the id names nothing on disk.
          if (id === undefined || !pipeline.stages.some((s) => s.id === id)) return json({ error: `no stage ${JSON.stringify(id)} in this pipeline` }, 404)
          return json(yield* stageDetail(pipeline, id))
        })
      ),
      HttpRouter.post(
        "/api/run",
        Effect.gen(function* () {
          // Only the page itself may start a run: a JSON request (which another site's page
          // cannot send without a preflight this server never grants) from this origin.
          const request = yield* HttpServerRequest.HttpServerRequest
          const origin = request.headers["origin"]
          const host = request.headers["host"]
          if (!(request.headers["content-type"] ?? "").startsWith("application/json") || (origin !== undefined && origin !== `http://${host}`)) {
            return json({ error: "runs start from the page itself" }, 403)
          }
          const body = yield* HttpServerRequest.schemaBodyJson(RunRequest).pipe(Effect.orElseSucceed(() => undefined))
          const pipeline = yield* load
          if (body === undefined || (body.stage !== undefined && !pipeline.stages.some((s) => s.id === body.stage))) {
            return json({ error: "expected { stage?: a stage id of this pipeline }" }, 400)
          }
          if (running !== undefined) return json({ error: `a run started here is going on (pid ${running.pid})` }, 409)
          // The CLI's own runner, in a process of its own: it takes the cache lock as any run does.
          const child = spawn(process.execPath, [
            assets.bin, "run", options.file, "--cache-dir", options.cacheDir,
            ...(body.stage === undefined ? [] : ["--until", body.stage]),
            ...options.overrides.flatMap((o) => ["--set", o.text])
          ], { stdio: ["ignore", "ignore", "pipe"] })
          running = { pid: child.pid ?? 0, stage: body.stage ?? null, startedAt: new Date().toISOString() }
          lastRunError = null
          // Its one-line error (the cache locked by another run, a stage failed) is shown on the page.
          let errors = ""
          child.stderr!.on("data", (chunk: Buffer) => (errors = (errors + chunk.toString()).slice(-4000)))
          child.on("close", (code) => {
            running = undefined
            if (code !== 0) lastRunError = errors.split("\n").filter((l) => /^(error: |✖ )/.test(l)).join(" · ") || `pipeline run exited with ${code}`
          })
          return json({ started: running }, 202)
        })
      )
    )
    const app = router.pipe(HttpServer.serve(), HttpServer.withLogAddress)
    const opener = Layer.effectDiscard(Effect.gen(function* () {
      const address = (yield* HttpServer.HttpServer).address
      if (!options.open || address._tag !== "TcpAddress") return
      const command = process.platform === "darwin" ? "open" : process.platform === "win32" ? "explorer" : "xdg-open"
      spawn(command, [`http://${address.hostname}:${address.port}`], { stdio: "ignore", detached: true }).on("error", () => undefined).unref()
    }))
    return yield* Layer.launch(Layer.merge(app, opener).pipe(Layer.provide(NodeHttpServer.layer(createServer, { host: options.host, port: options.port }))))
  })
