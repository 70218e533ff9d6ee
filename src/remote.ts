/**
 * The remote artifact store: the local store's entries shared through an S3 bucket,
 * as DVC's remotes share its cache. Everything is content-addressed by fingerprint,
 * so pushing and pulling are idempotent. Under `s3://BUCKET/PREFIX/`:
 *
 *   entries/<fingerprint>/<digest>/<file>…  an entry's files, under the first 16 hex
 *                                        digits of its output digest: two machines that
 *                                        push the same fingerprint with different bytes
 *                                        (a training's timings) never write the same key
 *   entries/<fingerprint>/manifest.json  written last, with If-None-Match: *, so an
 *                                        entry is visible only once it is complete, and
 *                                        the first push of a fingerprint is the one kept
 *   work/<fingerprint>/<file>…, index.json  the work folder of a stage in progress
 *                                        (training checkpoints), index written last
 *   runs/<pipeline>-<file hash>.json     the latest run of each pipeline file that pushed:
 *                                        what `gc --remote` keeps
 *
 * Nothing from the bucket is trusted: a manifest must hash to its fingerprint, name
 * only paths inside its entry and carry the digest of its files; each file is hashed
 * as it arrives and must match; sizes are never taken from the server. A bad object
 * is reported and never used.
 *
 * The client is the AWS SDK's: the endpoint (AWS_ENDPOINT_URL, for MinIO, R2, Ceph…),
 * the region and the credentials come from the standard variables and config files.
 * No message this module writes contains a credential.
 */
import type { S3Client } from "@aws-sdk/client-s3"
import { Context, Effect, Either, Layer, Option, Schema } from "effect"
import { createHash, randomBytes } from "node:crypto"
import { setMaxListeners } from "node:events"
import { createReadStream } from "node:fs"
import { mkdir, open, readdir, rename, rm } from "node:fs/promises"
import { dirname, join, relative, sep } from "node:path"
import type { Readable } from "node:stream"
import { RemoteError } from "./errors.ts"
import { ArtifactStore, checkForeignManifest, isInside, type Entry, type Manifest, type RunRecord } from "./store.ts"

export interface RemoteLocation {
  readonly bucket: string
  /** Empty, or ending in `/`. */
  readonly prefix: string
  readonly url: string
}

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/

/** `s3://bucket/some/prefix` → its parts, or why not. */
export const parseRemoteUrl = (text: string): Either.Either<RemoteLocation, string> => {
  const match = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(text.trim())
  if (match === null) return Either.left(`expected s3://BUCKET or s3://BUCKET/PREFIX, got ${JSON.stringify(text)}`)
  const bucket = match[1]!
  if (!BUCKET.test(bucket)) return Either.left(`"${bucket}" is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens)`)
  const parts = (match[2] ?? "").split("/").filter((p) => p !== "")
  if (parts.some((p) => p === "." || p === ".." || p.includes("\\"))) return Either.left(`the prefix of ${text} may not hold "." or ".." parts`)
  const prefix = parts.length === 0 ? "" : `${parts.join("/")}/`
  return Either.right({ bucket, prefix, url: `s3://${bucket}/${prefix}` })
}

/** Progress of a transfer: files and bytes done so far. */
export type TransferProgress = (done: { readonly files: number; readonly totalFiles: number; readonly bytes: number; readonly totalBytes: number }) => void

export type RemoteLookup =
  | { readonly _tag: "Found"; readonly manifest: Manifest }
  | { readonly _tag: "Miss" }
  | { readonly _tag: "Damaged"; readonly reason: string }

export interface RemoteGcReport {
  readonly removedEntries: number
  readonly keptEntries: number
  readonly removedWork: number
  readonly bytesFreed: number
}

export interface RemoteStoreService {
  readonly location: RemoteLocation
  /** The entry's manifest, checked; never its files. */
  readonly lookup: (fingerprint: string) => Effect.Effect<RemoteLookup, RemoteError>
  /** Fetches a found entry into the local store, each file verified as it arrives. */
  readonly pull: (manifest: Manifest, progress?: TransferProgress) => Effect.Effect<Entry, RemoteError, ArtifactStore>
  /** Uploads a local entry, its manifest last; `present` when the remote had it. `replace` overwrites a damaged one. */
  readonly push: (entry: Entry, options?: { readonly replace?: boolean; readonly progress?: TransferProgress }) => Effect.Effect<"pushed" | "present", RemoteError>
  /** Mirrors a work folder (checkpoints) to the remote: changed files, then the index, then stale files removed. */
  readonly pushWork: (fingerprint: string, dir: string) => Effect.Effect<void, RemoteError>
  /** Fetches a work folder mirrored by `pushWork` into `dir`; files that fail their check are left out, and said so. */
  readonly pullWork: (fingerprint: string, dir: string) => Effect.Effect<{ readonly files: number; readonly bad: ReadonlyArray<string> }, RemoteError>
  /** Removes a work folder once its stage's entry is pushed. */
  readonly dropWork: (fingerprint: string) => Effect.Effect<void, RemoteError>
  readonly pushRun: (record: RunRecord) => Effect.Effect<void, RemoteError>
  readonly gc: (options: { readonly dryRun: boolean; readonly graceMs: number }) => Effect.Effect<RemoteGcReport, RemoteError>
}

export class RemoteStore extends Context.Tag("RemoteStore")<RemoteStore, RemoteStoreService>() {}

const MANIFEST = "manifest.json"
const WORK_INDEX = "index.json"
/** A manifest or index larger than this is not one (a real one is kilobytes). */
const MAX_MANIFEST_BYTES = 64 * 1024 * 1024
const PART_SIZE = 8 * 1024 * 1024
const DOWNLOAD_ATTEMPTS = 5
const WORK_RETENTION_MS = 7 * 24 * 3600 * 1000

const WorkIndexSchema = Schema.Struct({
  fingerprint: Schema.String,
  files: Schema.Record({ key: Schema.String, value: Schema.Struct({ bytes: Schema.NonNegativeInt, sha256: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/)) }) })
})

const RemoteRunSchema = Schema.Struct({
  stages: Schema.Record({
    key: Schema.String,
    value: Schema.Struct({ fingerprint: Schema.String, parts: Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] }) })
  })
})

/** The HTTP status and S3 code of an SDK failure, for messages and decisions. */
const describe = (error: unknown): { readonly status: number | undefined; readonly code: string; readonly text: string } => {
  const service = error as { $metadata?: { httpStatusCode?: number }; $fault?: string; name?: string; message?: string }
  if (service?.$fault !== undefined && service.name !== undefined) {
    const status = service.$metadata?.httpStatusCode
    const message = service.message
    return { status, code: service.name, text: `${service.name}${status === undefined ? "" : ` (HTTP ${status})`}${message && message !== service.name && message !== "UnknownError" ? `: ${message}` : ""}` }
  }
  const e = error as { name?: string; code?: string; message?: string }
  return { status: undefined, code: e?.code ?? e?.name ?? "Error", text: `${e?.code ?? e?.name ?? "Error"}: ${e?.message ?? String(error)}` }
}

/** An object that is not there; a bucket that is not there is a failure, not an empty remote. */
const missing = (error: unknown): boolean => {
  const { code, status } = describe(error)
  return code !== "NoSuchBucket" && (status === 404 || code === "NoSuchKey" || code === "NotFound")
}

/** A failure in words, with what to do for the usual ones. */
const explain = (error: unknown): string => {
  const { code, text } = describe(error)
  if (code === "NoSuchBucket") return `${text}: the bucket does not exist; create it, or fix cache.remote / PIPELINE_REMOTE`
  if (code === "CredentialsProviderError" || /Could not load credentials/i.test(text)) {
    return `${text}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or give this machine a role`
  }
  if (code === "InvalidAccessKeyId" || code === "SignatureDoesNotMatch" || code === "AccessDenied") return `${text}: check the credentials this machine uses for S3`
  if (code === "TimeoutError" || /timed out|timeout/i.test(text)) {
    return `${text}: the S3 endpoint did not answer in time; check AWS_ENDPOINT_URL and the network, then run again (PIPELINE_REMOTE=off works without the remote)`
  }
  if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH/.test(text)) return `${text}: cannot reach the S3 endpoint; check AWS_ENDPOINT_URL and the network (PIPELINE_REMOTE=off works without the remote)`
  return text
}

/** A file that failed its check: not retried, reported. */
class Corrupt extends Error {}

/** Whether a failure may pass on retry (a dropped connection, a throttled or failing server). */
const transient = (error: unknown): boolean => {
  if (error instanceof Corrupt) return false
  const { status, code } = describe(error)
  if (status !== undefined) return status >= 500 || status === 429 || status === 408
  return /ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|socket hang up|aborted|premature close|TimeoutError/i.test(`${code} ${(error as Error)?.message}`)
}

const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms))

/**
 * An S3 client configured the standard way (variables, then ~/.aws files). A custom
 * endpoint (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3) gets path-style addressing, which
 * S3-compatible servers expect, and us-east-1 when no region is set.
 */
/** The AWS SDK, loaded when a command first needs the remote (a quarter of a second of start-up otherwise). */
export interface Sdk {
  readonly s3: typeof import("@aws-sdk/client-s3")
  readonly storage: typeof import("@aws-sdk/lib-storage")
}

const loadSdk = Effect.promise(async (): Promise<Sdk> => {
  // The SDK warns on Node 20 on every command; this project runs on Node 20 (see README: Limits).
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true"
  const [s3, storage] = await Promise.all([import("@aws-sdk/client-s3"), import("@aws-sdk/lib-storage")])
  // CommonJS packages: bundled, their exports may sit on `default`.
  const named = <M extends object>(module: M, name: string): M => (name in module ? module : (module as unknown as { default: M }).default)
  return { s3: named(s3, "S3Client"), storage: named(storage, "Upload") }
})

const makeClient = (sdk: Sdk): S3Client => {
  const endpoint = process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL
  const region = process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION
  return new sdk.s3.S3Client({
    maxAttempts: 5,
    // A server that accepts and never answers fails the command, never hangs it.
    requestHandler: { connectionTimeout: 10_000, requestTimeout: 120_000 },
    ...(endpoint !== undefined && endpoint !== "" && { forcePathStyle: true, ...(region === undefined && { region: "us-east-1" }) })
  })
}

const hashFile = async (file: string): Promise<{ readonly sha256: string; readonly bytes: number }> => {
  const hash = createHash("sha256")
  let bytes = 0
  for await (const chunk of createReadStream(file)) {
    hash.update(chunk as Buffer)
    bytes += (chunk as Buffer).length
  }
  return { sha256: hash.digest("hex"), bytes }
}

const listFiles = async (dir: string): Promise<ReadonlyArray<string>> => {
  const names = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])
  return names
    .filter((d) => d.isFile())
    .map((d) => relative(dir, join(d.parentPath ?? (d as unknown as { path: string }).path, d.name)).split(sep).join("/"))
    .sort()
}

export const make = (location: RemoteLocation, sdk: Sdk, client: S3Client = makeClient(sdk)): RemoteStoreService => {
  const { bucket, prefix, url } = location
  const { DeleteObjectsCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand } = sdk.s3
  const { Upload } = sdk.storage
  const entryKey = (fingerprint: string, name: string) => `${prefix}entries/${fingerprint}/${name}`
  /** Where a manifest's files are: beside it, under its output digest. */
  const fileKey = (manifest: Manifest, name: string) => entryKey(manifest.fingerprint, `${manifest.outputDigest.slice(0, 16)}/${name}`)
  const workKey = (fingerprint: string, name: string) => `${prefix}work/${fingerprint}/${name}`
  const where = (key: string) => `s3://${bucket}/${key}`

  const attempt = <A>(what: string, run: (signal: AbortSignal) => Promise<A>) =>
    Effect.tryPromise({
      // One signal serves every request of the operation: as many listeners as requests.
      try: (signal) => (setMaxListeners(0, signal), run(signal)),
      catch: (error) => new RemoteError({ message: `${what}: ${error instanceof Corrupt ? error.message : explain(error)}`, corrupt: error instanceof Corrupt })
    })

  /** A small object (a manifest, an index) as text, or undefined when absent; never more than MAX_MANIFEST_BYTES. */
  const getSmall = async (key: string, signal: AbortSignal): Promise<string | undefined> => {
    try {
      const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal })
      const chunks: Array<Buffer> = []
      let size = 0
      for await (const chunk of response.Body as Readable) {
        size += (chunk as Buffer).length
        if (size > MAX_MANIFEST_BYTES) throw new Corrupt(`${where(key)} is larger than ${MAX_MANIFEST_BYTES} bytes: not a manifest`)
        chunks.push(chunk as Buffer)
      }
      return Buffer.concat(chunks).toString("utf8")
    } catch (error) {
      if (missing(error)) return undefined
      throw error
    }
  }

  const exists = async (key: string, signal: AbortSignal): Promise<{ readonly bytes: number; readonly sha256: string | undefined; readonly modified: Date | undefined } | undefined> => {
    try {
      const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal })
      return { bytes: Number(head.ContentLength ?? -1), sha256: head.Metadata?.sha256, modified: head.LastModified }
    } catch (error) {
      if (missing(error)) return undefined
      throw error
    }
  }

  /**
   * Streams an object into `file`, hashing it, and checks it against what the manifest
   * says. A dropped connection resumes from the bytes already written (a Range request);
   * a server that ignores the range starts the file over.
   */
  const download = async (key: string, file: string, expected: { readonly bytes: number; readonly sha256: string }, onBytes: (n: number) => void, signal: AbortSignal) => {
    await mkdir(dirname(file), { recursive: true })
    const handle = await open(file, "w")
    try {
      let hash = createHash("sha256")
      let written = 0
      for (let attemptNo = 1; ; attemptNo++) {
        try {
          const response = await client.send(
            new GetObjectCommand({ Bucket: bucket, Key: key, ...(written > 0 && { Range: `bytes=${written}-` }) }),
            { abortSignal: signal }
          )
          if (written > 0 && !(response.ContentRange ?? "").startsWith(`bytes ${written}-`)) {
            // The whole object again: start over.
            onBytes(-written)
            written = 0
            hash = createHash("sha256")
            await handle.truncate(0)
          }
          for await (const chunk of response.Body as Readable) {
            const buffer = chunk as Buffer
            if (written + buffer.length > expected.bytes) throw new Corrupt(`${where(key)} is larger than its manifest says (${expected.bytes} bytes)`)
            hash.update(buffer)
            await handle.write(buffer, 0, buffer.length, written)
            written += buffer.length
            onBytes(buffer.length)
          }
          break
        } catch (error) {
          if (missing(error)) throw new Corrupt(`${where(key)} is missing`)
          if (attemptNo >= DOWNLOAD_ATTEMPTS || !transient(error) || signal.aborted) throw error
          await sleep(250 * 2 ** attemptNo)
        }
      }
      if (written !== expected.bytes) throw new Corrupt(`${where(key)} has ${written} bytes, its manifest says ${expected.bytes}`)
      if (hash.digest("hex") !== expected.sha256) throw new Corrupt(`${where(key)} does not match its sha256`)
    } finally {
      await handle.close()
    }
  }

  /** Uploads a file: multipart above PART_SIZE, each part retried by the client; its sha256 kept as metadata. */
  const upload = (key: string, file: string, sha256: string, onBytes: (loaded: number) => void, signal: AbortSignal) => {
    const transfer = new Upload({
      client,
      params: { Bucket: bucket, Key: key, Body: createReadStream(file), Metadata: { sha256 } },
      partSize: PART_SIZE,
      queueSize: 4,
      leavePartsOnError: false
    })
    transfer.on("httpUploadProgress", (p) => onBytes(p.loaded ?? 0))
    signal.addEventListener("abort", () => void transfer.abort().catch(() => undefined), { once: true })
    return transfer.done()
  }

  /** Deletes keys, a thousand at a time (S3's limit per request). */
  const deleteKeys = async (keys: ReadonlyArray<string>, signal: AbortSignal) => {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000)
      if (batch.length === 0) continue
      const result = await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }), { abortSignal: signal })
      const failed = result.Errors?.[0]
      if (failed !== undefined) throw new Error(`could not delete ${where(failed.Key ?? "?")}: ${failed.Code ?? ""} ${failed.Message ?? ""}`)
    }
  }

  /** Every object under a key prefix, with sizes and dates; or the folders one level down with `delimiter`. */
  const list = async (keyPrefix: string, signal: AbortSignal, delimiter?: string) => {
    const objects: Array<{ readonly key: string; readonly bytes: number; readonly modified: Date | undefined }> = []
    const folders: Array<string> = []
    let token: string | undefined
    do {
      const page = await client.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: keyPrefix, ContinuationToken: token, ...(delimiter !== undefined && { Delimiter: delimiter }) }),
        { abortSignal: signal }
      )
      for (const o of page.Contents ?? []) if (o.Key !== undefined) objects.push({ key: o.Key, bytes: Number(o.Size ?? 0), modified: o.LastModified })
      for (const p of page.CommonPrefixes ?? []) if (p.Prefix !== undefined) folders.push(p.Prefix)
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined
    } while (token !== undefined)
    return { objects, folders }
  }

  const lookup = (fingerprint: string) =>
    attempt(`cannot read the entry ${fingerprint.slice(0, 12)} from ${url}`, async (signal): Promise<RemoteLookup> => {
      const text = await getSmall(entryKey(fingerprint, MANIFEST), signal)
      if (text === undefined) return { _tag: "Miss" }
      const checked = checkForeignManifest(text, fingerprint)
      return Either.isRight(checked)
        ? { _tag: "Found", manifest: checked.right }
        : { _tag: "Damaged", reason: `the remote entry ${where(entryKey(fingerprint, MANIFEST))} is damaged (${checked.left}): not used` }
    })

  const pull = (manifest: Manifest, progress?: TransferProgress) =>
    Effect.scoped(
      Effect.gen(function* () {
        const store = yield* ArtifactStore
        const dir = yield* store.staging(manifest.fingerprint).pipe(Effect.mapError((e) => new RemoteError({ message: e.message })))
        const files = Object.entries(manifest.contents)
        const totalBytes = files.reduce((sum, [, f]) => sum + f.bytes, 0)
        let bytes = 0
        let done = 0
        yield* attempt(`cannot pull the entry ${manifest.fingerprint.slice(0, 12)} (${manifest.stage}) from ${url}`, async (signal) => {
          for (const [name, expected] of files) {
            await download(fileKey(manifest, name), join(dir, name), expected, (n) => {
              bytes += n
              progress?.({ files: done, totalFiles: files.length, bytes, totalBytes })
            }, signal)
            done++
            progress?.({ files: done, totalFiles: files.length, bytes, totalBytes })
          }
        })
        return yield* store.adopt(dir, manifest).pipe(Effect.mapError((e) => new RemoteError({ message: e.message, corrupt: true })))
      })
    )

  const push = (entry: Entry, options: { readonly replace?: boolean; readonly progress?: TransferProgress } = {}) =>
    attempt(`cannot push the entry ${entry.manifest.fingerprint.slice(0, 12)} (${entry.manifest.stage}) to ${url}`, async (signal): Promise<"pushed" | "present"> => {
      const { fingerprint } = entry.manifest
      const manifestKey = entryKey(fingerprint, MANIFEST)
      if (options.replace === true) await deleteKeys([manifestKey], signal)
      else if (await exists(manifestKey, signal) !== undefined) return "present"
      const files = Object.entries(entry.manifest.contents)
      const totalBytes = files.reduce((sum, [, f]) => sum + f.bytes, 0)
      let finished = 0
      let done = 0
      for (const [name, file] of files) {
        const key = fileKey(entry.manifest, name)
        // A push cut short resumes: objects already there whole are kept (unless replacing a damaged entry).
        const there = options.replace === true ? undefined : await exists(key, signal)
        if (there === undefined || there.bytes !== file.bytes || there.sha256 !== file.sha256) {
          await upload(key, join(entry.dir, name), file.sha256, (loaded) => options.progress?.({ files: done, totalFiles: files.length, bytes: finished + loaded, totalBytes }), signal)
        }
        finished += file.bytes
        done++
        options.progress?.({ files: done, totalFiles: files.length, bytes: finished, totalBytes })
      }
      try {
        await client.send(
          new PutObjectCommand({ Bucket: bucket, Key: manifestKey, Body: JSON.stringify(entry.manifest, null, 2), ContentType: "application/json", ...(options.replace !== true && { IfNoneMatch: "*" }) }),
          { abortSignal: signal }
        )
      } catch (error) {
        // Another machine pushed the same fingerprint first: content-addressed, so nothing is lost.
        const { status } = describe(error)
        if (status === 412 || status === 409) return "present"
        throw error
      }
      return "pushed"
    })

  const pushWork = (fingerprint: string, dir: string) =>
    attempt(`cannot push the work folder of ${fingerprint.slice(0, 12)} to ${url}`, async (signal) => {
      // Half-written checkpoints (`*.partial`) are not mirrored: only what is complete.
      const names = (await listFiles(dir)).filter((name) => !name.split("/").some((part) => part.endsWith(".partial")))
      const previousText = await getSmall(workKey(fingerprint, WORK_INDEX), signal)
      const previous = previousText === undefined ? undefined : Schema.decodeUnknownOption(Schema.parseJson(WorkIndexSchema))(previousText).pipe(Option.getOrUndefined)
      const files: Record<string, { bytes: number; sha256: string }> = {}
      for (const name of names) {
        const file = join(dir, name)
        const { sha256, bytes } = await hashFile(file)
        files[name] = { bytes, sha256 }
        const before = previous?.files[name]
        if (before?.sha256 === sha256 && before.bytes === bytes) continue
        await upload(workKey(fingerprint, name), file, sha256, () => undefined, signal)
      }
      await client.send(
        new PutObjectCommand({ Bucket: bucket, Key: workKey(fingerprint, WORK_INDEX), Body: JSON.stringify({ fingerprint, files }), ContentType: "application/json" }),
        { abortSignal: signal }
      )
      const stale = Object.keys(previous?.files ?? {}).filter((name) => !(name in files) && isInside(name))
      await deleteKeys(stale.map((name) => workKey(fingerprint, name)), signal)
    })

  const pullWork = (fingerprint: string, dir: string) =>
    attempt(`cannot pull the work folder of ${fingerprint.slice(0, 12)} from ${url}`, async (signal) => {
      const text = await getSmall(workKey(fingerprint, WORK_INDEX), signal)
      if (text === undefined) return { files: 0, bad: [] }
      const index = Schema.decodeUnknownOption(Schema.parseJson(WorkIndexSchema))(text).pipe(Option.getOrUndefined)
      if (index === undefined || index.fingerprint !== fingerprint) return { files: 0, bad: [`${where(workKey(fingerprint, WORK_INDEX))} (not a work index of this fingerprint)`] }
      const bad: Array<string> = []
      let files = 0
      for (const [name, expected] of Object.entries(index.files)) {
        if (!isInside(name) || name === WORK_INDEX) {
          bad.push(`${name} (outside the work folder)`)
          continue
        }
        const target = join(dir, name)
        const partial = `${target}.${randomBytes(4).toString("hex")}.download`
        try {
          await download(workKey(fingerprint, name), partial, expected, () => undefined, signal)
          await rename(partial, target)
          files++
        } catch (error) {
          await rm(partial, { force: true })
          if (!(error instanceof Corrupt)) throw error
          bad.push(error.message)
        }
      }
      return { files, bad }
    })

  const dropWork = (fingerprint: string) =>
    attempt(`cannot remove the work folder of ${fingerprint.slice(0, 12)} from ${url}`, async (signal) => {
      const { objects } = await list(`${prefix}work/${fingerprint}/`, signal)
      // The index first: a folder half removed is not mistaken for a checkpoint.
      const index = workKey(fingerprint, WORK_INDEX)
      await deleteKeys(objects.some((o) => o.key === index) ? [index] : [], signal)
      await deleteKeys(objects.map((o) => o.key).filter((key) => key !== index), signal)
    })

  /** One record per pipeline file (by its path on the machine that pushed), as in the local store. */
  const runKey = (record: RunRecord) =>
    `${prefix}runs/${record.pipeline.replace(/[^A-Za-z0-9_-]/g, "_")}-${createHash("sha256").update(`${record.pipeline}\0${record.file}`).digest("hex").slice(0, 12)}.json`

  const pushRun = (record: RunRecord) =>
    attempt(`cannot push the run record of ${record.pipeline} to ${url}`, async (signal) => {
      await client.send(
        new PutObjectCommand({ Bucket: bucket, Key: runKey(record), Body: JSON.stringify(record, null, 2), ContentType: "application/json" }),
        { abortSignal: signal }
      )
    })

  const gc = (options: { readonly dryRun: boolean; readonly graceMs: number }) =>
    attempt(`garbage collection of ${url} failed`, async (signal) => {
      const keep = new Set<string>()
      for (const run of (await list(`${prefix}runs/`, signal)).objects) {
        const text = await getSmall(run.key, signal)
        const record = text === undefined ? undefined : Schema.decodeUnknownOption(Schema.parseJson(RemoteRunSchema))(text).pipe(Option.getOrUndefined)
        // A record that cannot be read might name live entries: nothing is removed.
        if (record === undefined) throw new Corrupt(`the run record ${where(run.key)} cannot be read, so what it keeps is unknown; nothing was removed (delete it if it is garbage)`)
        for (const stage of Object.values(record.stages)) {
          keep.add(stage.fingerprint)
          for (const part of stage.parts) keep.add(part)
        }
      }
      const now = Date.now()
      const fingerprintOf = (folder: string) => folder.slice(0, -1).split("/").pop() ?? ""
      let removedEntries = 0
      let keptEntries = 0
      let bytesFreed = 0
      for (const folder of (await list(`${prefix}entries/`, signal, "/")).folders) {
        const fingerprint = fingerprintOf(folder)
        const objects = (await list(folder, signal)).objects
        const newest = Math.max(0, ...objects.map((o) => o.modified?.getTime() ?? 0))
        // An entry pushed moments ago may belong to a run still in progress: kept for the grace period.
        if (keep.has(fingerprint) || now - newest < options.graceMs) {
          keptEntries++
          // The files of a push that lost the race for the manifest (other bytes, another digest folder).
          const text = await getSmall(`${folder}${MANIFEST}`, signal)
          const kept = text === undefined ? undefined : Either.getOrUndefined(checkForeignManifest(text, fingerprint))
          if (kept !== undefined) {
            const inside = `${folder}${kept.outputDigest.slice(0, 16)}/`
            const stray = objects.filter((o) => o.key !== `${folder}${MANIFEST}` && !o.key.startsWith(inside) && now - (o.modified?.getTime() ?? 0) >= options.graceMs)
            bytesFreed += stray.reduce((sum, o) => sum + o.bytes, 0)
            if (!options.dryRun) await deleteKeys(stray.map((o) => o.key), signal)
          }
          continue
        }
        removedEntries++
        bytesFreed += objects.reduce((sum, o) => sum + o.bytes, 0)
        if (!options.dryRun) {
          // The manifest first: an entry half deleted never looks complete.
          const manifestKey = `${folder}${MANIFEST}`
          await deleteKeys(objects.some((o) => o.key === manifestKey) ? [manifestKey] : [], signal)
          await deleteKeys(objects.map((o) => o.key).filter((key) => key !== manifestKey), signal)
        }
      }
      let removedWork = 0
      for (const folder of (await list(`${prefix}work/`, signal, "/")).folders) {
        const objects = (await list(folder, signal)).objects
        const newest = Math.max(0, ...objects.map((o) => o.modified?.getTime() ?? 0))
        const committed = await exists(entryKey(fingerprintOf(folder), MANIFEST), signal) !== undefined
        if (!committed && now - newest < WORK_RETENTION_MS) continue
        removedWork++
        bytesFreed += objects.reduce((sum, o) => sum + o.bytes, 0)
        if (!options.dryRun) await deleteKeys(objects.map((o) => o.key), signal)
      }
      return { removedEntries, keptEntries, removedWork, bytesFreed } satisfies RemoteGcReport
    })

  return { location, lookup, pull, push, pushWork, pullWork, dropWork, pushRun, gc }
}

/** The remote store at `url` (s3://…), or a RemoteError saying what is wrong with it. */
export const fromUrl = (url: string, what = "the remote"): Effect.Effect<RemoteStoreService, RemoteError> =>
  Either.match(parseRemoteUrl(url), {
    onLeft: (why) => Effect.fail(new RemoteError({ message: `${what}: ${why}` })),
    onRight: (location) => Effect.map(loadSdk, (sdk) => make(location, sdk))
  })

export const layer = (url: string) => Layer.effect(RemoteStore, fromUrl(url))

/** The remote of this command, if one is configured: provided as an optional service. */
export const optionalRemote = Effect.serviceOption(RemoteStore)
