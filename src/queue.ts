/**
 * The queue executor: stages run by workers on other machines, dispatched through
 * Redis with BullMQ (the most used job queue in Node; Celery's role in Airflow).
 *
 * `pipeline run FILE --executor queue` walks the DAG as a local run does, but each
 * stage that must run becomes a job whose id is its fingerprint: a second request for
 * the same fingerprint (another run, another sweep) joins the job already queued or
 * running, so one worker runs it once. A worker (`pipeline worker`) runs each job as
 * a child `pipeline run FILE --only STAGE --push`: it pulls the stage's inputs from the
 * remote store, runs it, and pushes its entry, checkpoints included as they are
 * written. The child keeps the worker's event loop free, so the job's lock is renewed
 * however long a training step blocks; a worker killed with kill -9 stops renewing it,
 * BullMQ's stalled-job check puts the job back, and another worker resumes the stage
 * from the last checkpoint it pushed.
 *
 * Redis is trusted as the checkout is: a job names a pipeline file for the worker to
 * run. Keep it on a private network.
 */
import type { Job } from "bullmq"
import { Deferred, Effect, Either, Option, Runtime, Schema } from "effect"
import type { Redis, RedisOptions } from "ioredis"
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { existsSync } from "node:fs"
import { hostname } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { RemoteError, StageError } from "./errors.ts"
import type { ResolvedStage } from "./pipeline.ts"
import type { RemoteStoreService } from "./remote.ts"
import { Reporter } from "./reporter.ts"
import type { StageDispatch } from "./runner.ts"

const QUEUE = "pipeline-stages"

export interface QueueLocation {
  readonly options: RedisOptions
  /** The URL without its password: what messages show. */
  readonly shown: string
}

/** `redis://[:password@]host:port[/db]` (or rediss://) → connection options, or why not. */
export const parseQueueUrl = (text: string): Either.Either<QueueLocation, string> => {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    // Whatever is between // and the last @ may hold a password (which may hold a /).
    return Either.left(`expected redis://HOST:PORT, got ${JSON.stringify(text.replace(/\/\/.*@/, "//***@"))}`)
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") return Either.left(`expected redis://HOST:PORT or rediss://HOST:PORT, got a ${url.protocol} URL`)
  const db = url.pathname.replace(/^\//, "")
  if (db !== "" && !/^\d+$/.test(db)) return Either.left(`the database in ${url.protocol}//${url.host}/${db} must be a number`)
  const shown = `${url.protocol}//${url.host}${db === "" ? "" : `/${db}`}`
  return Either.right({
    shown,
    options: {
      host: url.hostname,
      port: url.port === "" ? 6379 : Number(url.port),
      ...(url.username !== "" && { username: decodeURIComponent(url.username) }),
      ...(url.password !== "" && { password: decodeURIComponent(url.password) }),
      ...(db !== "" && { db: Number(db) }),
      ...(url.protocol === "rediss:" && { tls: {} })
    }
  })
}

/** What a job carries: never a credential (workers use their own). */
export const JobData = Schema.Struct({
  file: Schema.String,
  overrides: Schema.Array(Schema.String),
  stage: Schema.String,
  fingerprint: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/)),
  /** The fingerprints the queuing run computed, of the stage and of those it needs: the worker's copy must agree. */
  expect: Schema.Record({ key: Schema.String, value: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/)) }),
  force: Schema.Boolean,
  remote: Schema.String.pipe(Schema.startsWith("s3://")),
  run: Schema.String
})
export type JobData = typeof JobData.Type

/** PIPELINE_EXPECT, set by a worker for its child run: the fingerprints to check, by stage id. */
export const expectedFingerprints = (text: string | undefined) =>
  text === undefined || text === ""
    ? Effect.succeed(undefined)
    : Schema.decodeUnknown(Schema.parseJson(JobData.fields.expect))(text).pipe(
      Effect.mapError(() => new RemoteError({ message: "PIPELINE_EXPECT is not what a worker sets (a JSON map of stage ids to fingerprints): unset it" }))
    )

/** What a worker answers when a job is done. */
const JobResult = Schema.Struct({ worker: Schema.String, fingerprint: Schema.String, durationMs: Schema.Number, status: Schema.String })
type JobResult = typeof JobResult.Type

/** Worker progress, as the job's progress: who runs it and how far it is. */
const JobProgress = Schema.Struct({
  worker: Schema.String,
  done: Schema.optional(Schema.Number),
  total: Schema.optional(Schema.Number),
  unit: Schema.optional(Schema.String)
})

/**
 * A connection that gives up: a dead Redis makes the command fail, never hang. After
 * a few reconnection attempts (about 3 s) the connection ends, and so does the run.
 */
/** BullMQ and its Redis client, loaded when a command first needs the queue (0.2 s of start-up otherwise). */
const libraries = Effect.promise(async () => {
  const [bullmq, ioredis] = await Promise.all([import("bullmq"), import("ioredis")])
  // CommonJS packages: bundled, their exports may sit on `default`.
  const named = <M extends object>(module: M, name: string): M => (name in module ? module : (module as unknown as { default: M }).default)
  return { bullmq: named(bullmq, "Queue"), Redis: named(ioredis, "Redis").Redis }
})

const connect = (RedisClient: typeof Redis, location: QueueLocation, blocking: boolean) =>
  new RedisClient({
    ...location.options,
    lazyConnect: true,
    connectTimeout: 5000,
    maxRetriesPerRequest: blocking ? null : 2,
    enableOfflineQueue: blocking,
    retryStrategy: (times) => (times > 5 ? null : Math.min(1000, 100 * 2 ** times))
  })

const unreachable = (location: QueueLocation, error: unknown) => {
  const why = (error as Error)?.message ?? String(error)
  return new RemoteError({
    message: /WRONGPASS|NOAUTH|invalid password|invalid username/i.test(why)
      ? `Redis at ${location.shown} refused the connection (${why.split("\n")[0]}): give the user and password in --queue (redis://USER:PASSWORD@HOST:PORT)`
      : `cannot reach Redis at ${location.shown} (${why}): start it (redis-server --port PORT) or fix --queue`
  })
}

/** Connects and checks the server answers, failing clearly when it does not. */
const ready = (location: QueueLocation, blocking: boolean) =>
  Effect.acquireRelease(
    Effect.flatMap(libraries, ({ Redis: RedisClient }) => Effect.tryPromise({
      try: async () => {
        const connection = connect(RedisClient, location, blocking)
        // Reported through `end` and failed commands; the socket's own error says why.
        let cause: Error | undefined
        connection.on("error", (error: Error) => (cause = error))
        try {
          await connection.connect()
          await connection.ping()
        } catch (error) {
          connection.disconnect()
          throw cause ?? error
        }
        return connection
      },
      catch: (error) => unreachable(location, error)
    })),
    (connection) => Effect.sync(() => connection.disconnect())
  )

const messageOf = (error: unknown): string => (error as Error)?.message ?? String(error)

/** A stage's outcome, as the worker's child run reports it over IPC (its `--json` entry). */
interface ChildOutcome {
  readonly id: string
  readonly status: string
  readonly fingerprint: string | null
  readonly reason: string
}

interface Waiter {
  readonly done: (result: Either.Either<unknown, string>) => void
  readonly progress: (data: unknown) => void
  readonly removed: () => void
}

/**
 * The coordinator's side: each stage a job, awaited until a worker finishes it (or
 * fails, or Redis goes away). Interrupting the run (Ctrl-C) removes the jobs it queued
 * that no worker has started.
 */
export const queueDispatch = (location: QueueLocation, remote: RemoteStoreService, job: { readonly file: string; readonly overrides: ReadonlyArray<string> }) =>
  Effect.gen(function* () {
    const reporter = yield* Reporter
    const connection = yield* ready(location, false)
    const eventsConnection = yield* ready(location, true)
    const run = randomBytes(8).toString("hex")
    // Redis gone for good (after the client's retries): every stage still waiting fails with this.
    const lost = yield* Deferred.make<never, RemoteError>()
    const runtime = yield* Effect.runtime<never>()
    for (const c of [connection, eventsConnection]) {
      c.on("end", () => Runtime.runSync(runtime)(Deferred.fail(lost, new RemoteError({ message: `lost the connection to Redis at ${location.shown}: the run stops; stages that finished are cached` }))))
    }
    const { Job, Queue, QueueEvents } = (yield* libraries).bullmq
    const queue = new Queue(QUEUE, { connection })
    const events = new QueueEvents(QUEUE, { connection: eventsConnection })
    queue.on("error", () => undefined)
    events.on("error", () => undefined)
    yield* Effect.addFinalizer(() => Effect.promise(() => Promise.allSettled([events.close(), queue.close()])))
    yield* Effect.tryPromise({ try: () => events.waitUntilReady(), catch: (error) => unreachable(location, error) })

    // Several stages of one run may share a fingerprint (a sweep over a param that is not
    // fingerprinted): each waits on the one job.
    const waiters = new Map<string, Set<Waiter>>()
    const each = (jobId: string | undefined, act: (waiter: Waiter) => void) => {
      for (const waiter of [...(waiters.get(jobId ?? "") ?? [])]) act(waiter)
    }
    events.on("completed", ({ jobId, returnvalue }) => each(jobId, (w) => w.done(Either.right(returnvalue))))
    events.on("failed", ({ jobId, failedReason }) => each(jobId, (w) => w.done(Either.left(failedReason))))
    events.on("progress", ({ jobId, data }) => each(jobId, (w) => w.progress(data)))
    // Withdrawn by the run that queued it (Ctrl-C there): the others waiting queue it again.
    events.on("removed", ({ jobId }) => each(jobId, (w) => w.removed()))

    const decodeProgress = Schema.decodeUnknownOption(JobProgress)
    const decodeResult = Schema.decodeUnknownEither(Schema.Union(JobResult, Schema.parseJson(JobResult)))

    /** The job's result; `reused` when an earlier run's finished job answered. */
    const runStage = (stage: ResolvedStage, fingerprint: string, expect: Readonly<Record<string, string>>, options: { readonly reuse: boolean; readonly force: boolean }) =>
      Effect.async<{ readonly result: JobResult; readonly reused: boolean }, StageError>((resume) => {
        let reused = false
        let settled = false
        let announced: string | undefined
        let created = false
        const forget = () => {
          waiters.get(fingerprint)?.delete(waiter)
          if (waiters.get(fingerprint)?.size === 0) waiters.delete(fingerprint)
        }
        const finish = (result: Either.Either<unknown, string>) => {
          if (settled) return
          settled = true
          forget()
          if (Either.isLeft(result)) return resume(Effect.fail(new StageError({ message: `on a worker: ${result.left}` })))
          const decoded = decodeResult(result.right)
          resume(Either.isRight(decoded) ? Effect.succeed({ result: decoded.right, reused }) : Effect.fail(new StageError({ message: "a worker answered with a result this program does not understand" })))
        }
        const data: JobData = { file: job.file, overrides: [...job.overrides], stage: stage.id, fingerprint, expect, force: options.force, remote: remote.location.url, run }
        const submit = async () => {
          // A job another run finished moments ago answers this one too; a failed one is
          // retried (it would swallow the new request: a job id is queued once).
          const previous = await Job.fromId(queue, fingerprint)
          const state = previous === undefined ? undefined : await previous.getState()
          if (state === "completed" && options.reuse && !options.force) {
            reused = true
            return finish(Either.right(previous!.returnvalue))
          }
          if (state === "completed" || state === "failed") await previous!.remove().catch(() => undefined)
          const added = await queue.add(stage.id, data, { jobId: fingerprint, attempts: 1, removeOnComplete: { age: 3600 }, removeOnFail: { age: 24 * 3600 } })
          // A request for a fingerprint already queued or running joins that job.
          created = ((await Job.fromId(queue, fingerprint))?.data as JobData | undefined)?.run === run
          // It may have ended before the listener saw it.
          const now = await added.getState()
          if (now === "completed") finish(Either.right((await Job.fromId(queue, fingerprint))?.returnvalue))
          else if (now === "failed") finish(Either.left((await Job.fromId(queue, fingerprint))?.failedReason ?? "failed"))
        }
        let submitted = Promise.resolve()
        const resubmit = () => {
          submitted = submitted.then(submit).catch((error) => finish(Either.left(`cannot queue the stage: ${messageOf(error)}`)))
        }
        const waiter: Waiter = {
          done: finish,
          removed: () => {
            if (!settled) resubmit()
          },
          progress: (progressData) => {
            const progress = decodeProgress(progressData)
            if (Option.isNone(progress)) return
            const { worker, done, total, unit } = progress.value
            if (worker !== announced) {
              announced = worker
              Runtime.runSync(runtime)(reporter.log(stage.id, `running on worker ${worker}`))
            }
            if (done !== undefined && total !== undefined) Runtime.runSync(runtime)(reporter.progress(stage.id, { done, total, unit: unit ?? "steps" }))
          }
        }
        waiters.set(fingerprint, (waiters.get(fingerprint) ?? new Set()).add(waiter))
        resubmit()
        // Interrupted (Ctrl-C, or the run failing): a job this run queued and nobody started is withdrawn.
        return Effect.promise(async () => {
          forget()
          await submitted
          if (!created || settled) return
          const queued = await Job.fromId(queue, fingerprint).catch(() => undefined)
          const state = await queued?.getState().catch(() => undefined)
          if ((queued?.data as JobData | undefined)?.run === run && (state === "waiting" || state === "delayed" || state === "prioritized")) {
            await queued?.remove().catch(() => undefined)
          }
        })
      })

    return {
      run: (stage, fingerprint, _reason, context) =>
        Effect.gen(function* () {
          const attempt = (reuse: boolean) =>
            runStage(stage, fingerprint, { ...context.upstream, [stage.id]: fingerprint }, { reuse, force: context.force }).pipe(
              Effect.raceFirst(Deferred.await(lost).pipe(Effect.mapError((e) => new StageError({ message: e.message }))))
            )
          let { result, reused } = yield* attempt(true)
          // An old finished job whose entry has since left the remote (gc --remote): run it again.
          if (reused && (yield* remote.lookup(fingerprint).pipe(Effect.orElseSucceed(() => ({ _tag: "Miss" as const }))))._tag !== "Found") {
            ;({ result, reused } = yield* attempt(false))
          }
          if (result.fingerprint !== fingerprint) {
            return yield* new StageError({
              message: `worker ${result.worker} computed the fingerprint ${result.fingerprint.slice(0, 12)} for this stage, this machine ${fingerprint.slice(0, 12)}: its copy of ${job.file} or of the stages' code differs from this one; give the workers the same checkout`
            })
          }
          const found = yield* remote.lookup(fingerprint).pipe(Effect.mapError((e) => new StageError({ message: e.message })))
          if (found._tag !== "Found") {
            return yield* new StageError({
              message: `worker ${result.worker} finished, but the entry is not in ${remote.location.url}${found._tag === "Damaged" ? ` (${found.reason})` : ""}`
            })
          }
          return { manifest: found.manifest, worker: result.worker, durationMs: result.durationMs }
        })
    } satisfies StageDispatch
  })

export interface WorkerOptions {
  readonly queue: QueueLocation
  readonly concurrency: number
  /** Each slot runs its stages in `<cacheDir>/slot-<n>`: a cache holds one writer at a time. */
  readonly cacheDir: string
  /** How long a job stays locked to a worker without news: a dead worker's stage goes to another after this. */
  readonly stallMs: number
  /** Extra arguments for each stage's `pipeline run` (the backend, threads). */
  readonly runArgs: ReadonlyArray<string>
  readonly log: (line: string) => void
}

/** This program's own binary, from the sources (src/) or the start-up bundle (dist/<key>/). */
const binary = (): string => {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = resolve(dir, "..")) {
    const candidate = join(dir, "bin/pipeline.js")
    if (existsSync(candidate)) return candidate
    if (resolve(dir, "..") === dir) return resolve(process.argv[1] ?? "pipeline")
  }
}

/**
 * Runs stages from the queue until interrupted. Each job runs in a child `pipeline run`,
 * whose progress comes back over IPC and goes to the job; it exits if this worker dies.
 */
export const runWorker = (options: WorkerOptions) =>
  Effect.gen(function* () {
    const name = `${hostname()}:${process.pid}`
    const { WaitingError, Worker } = (yield* libraries).bullmq
    const connection = yield* ready(options.queue, true)
    const free = Array.from({ length: options.concurrency }, (_, i) => i)
    const children = new Set<ReturnType<typeof spawn>>()
    const decodeJob = Schema.decodeUnknownEither(JobData)
    let stopping = false

    const processor = async (job: Job, token?: string) => {
      const decoded = decodeJob(job.data)
      if (Either.isLeft(decoded)) throw new Error(`job ${job.id} is not a stage job this worker understands`)
      const data = decoded.right
      if (!existsSync(data.file)) throw new Error(`worker ${name} cannot read ${data.file}: workers need the pipeline's files (a shared checkout at the same path)`)
      const slot = free.shift() ?? 0
      const started = performance.now()
      options.log(`▶ ${data.stage} (${data.fingerprint.slice(0, 12)}) from ${data.file}`)
      try {
        await job.updateProgress({ worker: name })
        const args = [
          binary(), "run", data.file, "--only", data.stage, "--push",
          ...(data.force ? ["--force", data.stage] : []),
          "--cache-dir", join(options.cacheDir, `slot-${slot}`),
          ...data.overrides.flatMap((o) => ["--set", o]),
          ...options.runArgs
        ]
        const child = spawn(process.execPath, args, {
          stdio: ["ignore", "pipe", "pipe", "ipc"],
          env: { ...process.env, PIPELINE_REMOTE: data.remote, PIPELINE_EVENTS: "ipc", PIPELINE_EXPECT: JSON.stringify(data.expect) }
        })
        children.add(child)
        // Whatever a stage prints goes to this worker's log; the outcome comes over IPC.
        child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
          for (const line of chunk.split("\n")) if (line !== "") options.log(`  │ ${data.stage} (stdout): ${line}`)
        })
        let lastError: string | undefined
        let outcomes: ReadonlyArray<ChildOutcome> | undefined
        // The stage's own log, each line marked with its stage: several may run at once.
        let pending = ""
        child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
          const lines = (pending + chunk).split("\n")
          pending = lines.pop() ?? ""
          for (const line of lines) {
            if (line === "") continue
            if (line.startsWith("error: ")) lastError = line.slice("error: ".length)
            options.log(`  │ ${data.stage}: ${line}`)
          }
        })
        let lastProgress = 0
        child.on("message", (message: { type?: string; id?: string; done?: number; total?: number; unit?: string; stages?: ReadonlyArray<ChildOutcome> }) => {
          if (message?.type === "result" && Array.isArray(message.stages)) outcomes = message.stages
          if (message?.type !== "progress" || message.id !== data.stage) return
          const now = Date.now()
          if (now - lastProgress < 1000 && message.done !== message.total) return
          lastProgress = now
          void job.updateProgress({ worker: name, done: message.done, total: message.total, unit: message.unit }).catch(() => undefined)
        })
        const code = await new Promise<number | null>((done) => child.on("close", (c) => done(c)))
        children.delete(child)
        if (stopping && token !== undefined) {
          // This worker is stopping (Ctrl-C): the job goes back to the queue for another.
          await job.moveToWait(token)
          options.log(`↩ ${data.stage}: stopped here, back in the queue`)
          throw new WaitingError()
        }
        const outcome = outcomes?.find((o) => o.id === data.stage)
        if (code !== 0 || outcome === undefined || (outcome.status !== "ran" && outcome.status !== "cached")) {
          // The stage's own failure, else the first stage that failed before it (an upstream
          // stage this worker could not fetch, or whose fingerprint differs here), else the run's error.
          const why = (outcome?.status === "failed" ? outcome : undefined)?.reason ??
            outcomes?.find((o) => o.status === "failed")?.reason ??
            lastError ??
            `pipeline run exited with ${code ?? "a signal"}`
          options.log(`✖ ${data.stage}: ${why}`)
          throw new Error(`${why} (worker ${name})`)
        }
        const durationMs = performance.now() - started
        options.log(`✔ ${data.stage}: ${outcome.status} in ${(durationMs / 1000).toFixed(1)}s`)
        return { worker: name, fingerprint: outcome.fingerprint ?? "", durationMs, status: outcome.status } satisfies JobResult
      } finally {
        free.push(slot)
      }
    }

    const worker = new Worker(QUEUE, processor, {
      connection,
      concurrency: options.concurrency,
      lockDuration: options.stallMs,
      stalledInterval: Math.max(1000, Math.round(options.stallMs / 2)),
      maxStalledCount: 3,
      autorun: false
    })
    worker.on("error", (error) => options.log(`worker error: ${messageOf(error)}`))
    const closed = yield* Deferred.make<void, RemoteError>()
    const runtime = yield* Effect.runtime<never>()
    connection.on("end", () => Runtime.runSync(runtime)(Deferred.fail(closed, new RemoteError({ message: `lost the connection to Redis at ${options.queue.shown}` }))))
    options.log(`worker ${name}: waiting for stages on ${options.queue.shown} (${options.concurrency} at a time; Ctrl-C stops)`)
    void worker.run().catch((error) => Runtime.runSync(runtime)(Deferred.fail(closed, new RemoteError({ message: messageOf(error) }))))
    // Stopping (Ctrl-C): the running stages are stopped, their jobs go straight back to
    // the queue, and another worker resumes them from their last checkpoint.
    yield* Effect.addFinalizer(() =>
      Effect.promise(async () => {
        stopping = true
        for (const child of children) child.kill("SIGTERM")
        await worker.close().catch(() => undefined)
      })
    )
    return yield* Deferred.await(closed)
  })

