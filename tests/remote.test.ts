/**
 * The remote artifact store against a real S3-compatible server on loopback (s3rver):
 * `run --push` then a run from an empty cache pulls everything; `push`/`pull` by stage;
 * large files go up in parts and come down again after a dropped connection; a corrupt
 * object or a forged manifest is reported and never used; `gc --remote`; and the canary
 * credentials appear in no file and no output.
 */
import { createHash } from "node:crypto"
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { createServer, request, type Server } from "node:http"
import { join, resolve } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { cliAsync, type CliResult, projectTempDir, REPO, tempDir, writeFile } from "./helpers.ts"
import { CANARY, canaryLeaks, type S3Server, startS3 } from "./support/servers.ts"

const ASCII = resolve(REPO, "pipelines/tokenizers/ascii")

let s3: S3Server
const outputs: Array<CliResult> = []
const dirs: Array<string> = []

beforeAll(async () => {
  s3 = await startS3()
})
afterAll(async () => {
  await s3?.stop()
})

const pipelineFile = (prefix: string, extra = "") => {
  const dir = tempDir()
  dirs.push(dir)
  return writeFile(dir, "p.yaml", `name: shared
cache: { remote: s3://${s3.bucket}/${prefix} }
stages:
  problems: { uses: word-problems, with: { splits: { train: 120, test: 12 }, seed: 3, max_operand: 9 } }
  tokenized:
    uses: tokenize
    needs: [problems]
    with: { tokenizer: ${JSON.stringify(ASCII)}, prompt: question, completion: answer }
  train:
    uses: train
    needs: [tokenized]
    with:
      init: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 256 }
      tokenizer: ${JSON.stringify(ASCII)}
      max_steps: 4
      batch_size: 8
      learning_rate: 2.0e-3
      logging_steps: 2
${extra}`)
}

interface RunJson {
  stages: Array<{ id: string; status: string; reason: string; remote?: string; worker?: string; fingerprint: string | null; outputs: { entry: string; model?: { dir: string } } | null }>
}

const pipeline = async (args: ReadonlyArray<string>, env: Record<string, string> = {}) => {
  const cache = args.includes("--cache-dir") ? undefined : tempDir()
  if (cache !== undefined) dirs.push(cache)
  const result = await cliAsync([...args, ...(cache === undefined ? [] : ["--cache-dir", cache])], { env: { ...s3.env, PIPELINE_THREADS: "1", ...env } })
  outputs.push(result)
  return result
}

const statuses = (stdout: string) => (JSON.parse(stdout) as RunJson).stages.map((s) => `${s.id}:${s.status}${s.remote === undefined ? "" : `:${s.remote}`}`)

/** The object files s3rver keeps for keys under `prefix`. */
const objects = (prefix: string): ReadonlyArray<string> => {
  const root = join(s3.dir, s3.bucket, prefix)
  const found: Array<string> = []
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith("._S3rver_object")) found.push(path)
    }
  }
  walk(root)
  return found
}

const sha = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex")

describe("remote store (S3 on loopback)", () => {
  it("run --push, then a run from an empty cache pulls every stage and runs none; push and pull by stage", async () => {
    const file = pipelineFile("team-a")
    const first = await pipeline(["run", file, "--push", "--json"])
    expect(first.code, first.stderr).toBe(0)
    expect(statuses(first.stdout)).toEqual(["problems:ran:pushed", "tokenized:ran:pushed", "train:ran:pushed"])
    // Entries are complete in the bucket, manifests included; no work folder is left behind.
    expect(objects("team-a/entries").filter((o) => o.includes("manifest.json")).length).toBe(3)
    expect(objects("team-a").some((o) => o.includes("/work/"))).toBe(false)

    const fresh = await pipeline(["run", file, "--json"])
    expect(fresh.code, fresh.stderr).toBe(0)
    expect(statuses(fresh.stdout)).toEqual(["problems:cached:pulled", "tokenized:cached:pulled", "train:cached:pulled"])
    expect(fresh.stderr).toMatch(/train: pulling from s3:\/\/artifacts\/team-a\/ \(\d+ file\(s\)/)
    const model = (run: CliResult) => join((JSON.parse(run.stdout) as RunJson).stages.find((s) => s.id === "train")!.outputs!.model!.dir, "model.safetensors")
    expect(sha(model(fresh))).toBe(sha(model(first)))

    // `pipeline push` again: everything is there already.
    const cache = tempDir()
    const again = await pipeline(["run", file, "--cache-dir", cache, "--json"])
    expect(again.code).toBe(0)
    const pushed = await pipeline(["push", file, "--cache-dir", cache, "--json"])
    expect(pushed.code, pushed.stderr).toBe(0)
    expect((JSON.parse(pushed.stdout) as { stages: Array<{ id: string; result: string }> }).stages.map((s) => `${s.id}:${s.result}`)).toEqual([
      "problems:present",
      "tokenized:present",
      "train:present"
    ])

    // `pipeline pull FILE tokenized` fetches that stage alone: problems is fingerprinted from its remote manifest.
    const only = tempDir()
    const pulled = await pipeline(["pull", file, "tokenized", "--cache-dir", only, "--json"])
    expect(pulled.code, pulled.stderr).toBe(0)
    expect((JSON.parse(pulled.stdout) as { stages: Array<{ id: string; result: string }> }).stages.map((s) => `${s.id}:${s.result}`)).toEqual(["tokenized:pulled"])
    expect(readdirSync(join(only, "entries")).length).toBe(1)
    // What is pulled is recorded, so gc keeps it.
    expect(JSON.parse((await pipeline(["gc", "--dry-run", "--json", "--cache-dir", only])).stdout)).toMatchObject({ removedEntries: 0, keptEntries: 1 })
    // status sees the remote too: fresh here, or fresh in the remote; show asks for a pull.
    const status = await pipeline(["status", file, "--cache-dir", only, "--json"])
    expect((JSON.parse(status.stdout) as { stages: Array<{ id: string; state: string; remote?: boolean }> }).stages.map((s) => `${s.id}:${s.state}:${s.remote ?? "here"}`)).toEqual([
      "problems:fresh:true",
      "tokenized:fresh:here",
      "train:fresh:true"
    ])
    const shown = await pipeline(["show", file, "train", "--cache-dir", only])
    expect(shown.code).toBe(2)
    expect(shown.stderr).toMatch(/stage "train"'s output is in the remote store, not here: pipeline pull \S+ train fetches it/)
    // PIPELINE_REMOTE=off: without the file's remote, this cache has tokenized alone.
    const offline = await pipeline(["status", file, "--cache-dir", only, "--json"], { PIPELINE_REMOTE: "off" })
    expect((JSON.parse(offline.stdout) as { stages: Array<{ id: string; state: string }> }).stages.map((s) => `${s.id}:${s.state}`)).toEqual([
      "problems:stale",
      "tokenized:stale",
      "train:stale"
    ])

    // A stage that is in neither store: pull says so and exits 1.
    const missing = await pipeline(["pull", pipelineFile("team-empty"), "--json"])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/✖ problems: not pulled \(not in s3:\/\/artifacts\/team-empty\/\)/)
  })

  it("a corrupt object or a forged manifest in the bucket is reported and never used: the stage runs instead", async () => {
    const file = pipelineFile("team-b")
    const first = await pipeline(["run", file, "--push", "--json", "--until", "tokenized"])
    expect(first.code, first.stderr).toBe(0)
    const fingerprints = Object.fromEntries((JSON.parse(first.stdout) as RunJson).stages.map((s) => [s.id, s.fingerprint!]))

    // One byte of tokenized's data flipped, its size kept.
    const data = objects(`team-b/entries/${fingerprints.tokenized}`).find((o) => o.endsWith("train.arrow._S3rver_object"))!
    const bytes = readFileSync(data)
    bytes[bytes.length >> 1]! ^= 0xff
    writeFileSync(data, bytes)
    // problems' manifest forged: a param changed, so its material no longer hashes to its fingerprint.
    const manifest = objects(`team-b/entries/${fingerprints.problems}`).find((o) => o.endsWith("manifest.json._S3rver_object"))!
    writeFileSync(manifest, readFileSync(manifest, "utf8").replace(/"seed": 3/, '"seed": 4'))

    const pulled = await pipeline(["pull", file, "--json"])
    expect(pulled.code).toBe(1)
    expect(pulled.stderr).toMatch(/problems: not pulled \(the remote entry s3:\/\/artifacts\/team-b\/entries\/[0-9a-f]{64}\/manifest\.json is damaged \(its material does not hash to its fingerprint\): not used\)/)

    const run = await pipeline(["run", file, "--json", "--until", "tokenized"])
    expect(run.code, run.stderr).toBe(0)
    expect(statuses(run.stdout)).toEqual(["problems:ran", "tokenized:ran", "train:skipped"])
    expect(run.stderr).toMatch(/problems: the remote entry .* is damaged \(its material does not hash to its fingerprint\): not used/)
    // The same bytes made again, so tokenized's fingerprint is the one whose data was corrupted.
    expect((JSON.parse(run.stdout) as RunJson).stages[1]!.fingerprint).toBe(fingerprints.tokenized)
    expect(run.stderr).toMatch(/tokenized: cannot pull the entry [0-9a-f]{12} \(tokenized\) from s3:\/\/artifacts\/team-b\/: s3:\/\/artifacts\/team-b\/entries\/[0-9a-f]{64}\/[0-9a-f]{16}\/dataset\/train\.arrow does not match its sha256: not used/)

    // A push replaces the damaged entries; the next fresh run pulls them whole.
    const repaired = await pipeline(["run", file, "--json", "--push", "--until", "tokenized"])
    expect(repaired.code, repaired.stderr).toBe(0)
    const fresh = await pipeline(["run", file, "--json", "--until", "tokenized"])
    expect(statuses(fresh.stdout)).toEqual(["problems:cached:pulled", "tokenized:cached:pulled", "train:skipped"])
  })

  it("large files go up in parts and come down again after a dropped connection, resumed where it broke", async () => {
    // A plug-in stage writing 20 MB: multipart above 8 MiB.
    const dir = projectTempDir()
    dirs.push(dir)
    writeFile(dir, "big.ts", `import { Effect, Schema } from "effect"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { defineStage } from ${JSON.stringify(join(REPO, "src/stage.ts"))}
export default defineStage({
  name: "big",
  version: "1",
  params: Schema.Struct({ mb: Schema.Number }),
  accepts: { kinds: [], min: 0, max: 0 },
  produces: ["files"],
  run: (ctx) => Effect.sync(() => {
    const bytes = Buffer.alloc(ctx.params.mb * 1e6)
    for (let i = 0; i < bytes.length; i += 4) bytes.writeUInt32LE((i * 2654435761) >>> 0, i)
    writeFileSync(join(ctx.outDir, "blob.bin"), bytes)
    return { outputs: { files: { kind: "files", dir: ctx.outDir, files: ["blob.bin"] } } }
  })
})
`)
    // Through a proxy that counts the requests, and cuts the first GET of the blob a third of the way.
    let cut = 0
    const requests: Array<string> = []
    const proxy: Server = createServer((incoming, outgoing) => {
      requests.push(`${incoming.method} ${incoming.url} ${incoming.headers.range ?? ""} ${incoming.headers["if-none-match"] ?? ""}`.trim())
      const target = new URL(s3.endpoint)
      const upstream = request({ host: target.hostname, port: target.port, method: incoming.method, path: incoming.url, headers: incoming.headers }, (response) => {
        const dropping = incoming.method === "GET" && incoming.url!.includes("blob.bin") && incoming.headers.range === undefined && cut === 0
        outgoing.writeHead(response.statusCode!, response.headers)
        if (!dropping) return void response.pipe(outgoing)
        cut++
        let sent = 0
        response.on("data", (chunk: Buffer) => {
          if (sent > 7e6) return void outgoing.destroy()
          sent += chunk.length
          outgoing.write(chunk)
        })
      })
      incoming.pipe(upstream)
    })
    await new Promise<void>((done) => proxy.listen(0, "127.0.0.1", () => done()))
    const proxied = { AWS_ENDPOINT_URL: `http://127.0.0.1:${(proxy.address() as { port: number }).port}` }
    try {
      const file = writeFile(dir, "big.yaml", `name: big
cache: { remote: s3://${s3.bucket}/team-c }
stages:
  blob: { uses: ./big.ts, with: { mb: 20 } }
`)
      const first = await pipeline(["run", file, "--push", "--json"], proxied)
      expect(first.code, first.stderr).toBe(0)
      expect(first.stderr).toMatch(/blob: 1\/1 files pushed \(20\.0 MB of 20\.0 MB/)
      // The manifest last, created only if absent (S3's conditional write; s3rver ignores it, S3 and MinIO honour it).
      const entryPuts = requests.filter((r) => r.startsWith("PUT /artifacts/team-c/entries/") && !r.includes("partNumber="))
      expect(entryPuts).toEqual([expect.stringMatching(/^PUT \/artifacts\/team-c\/entries\/[0-9a-f]{64}\/manifest\.json\S* +\*$/)])
      const completed = requests.findIndex((r) => r.startsWith("POST") && r.includes("blob.bin") && r.includes("uploadId="))
      expect(completed).toBeGreaterThan(-1)
      expect(requests.indexOf(entryPuts[0]!)).toBeGreaterThan(completed)
      // In parts of 8 MiB: 3 of them.
      expect(new Set(requests.filter((r) => r.startsWith("PUT") && r.includes("blob.bin") && r.includes("partNumber=")).map((r) => /partNumber=(\d+)/.exec(r)![1])).size).toBe(3)
      const blob = objects("team-c/entries").find((o) => o.includes("blob.bin"))!
      expect(statSync(blob).size).toBe(20e6)

      const fresh = await pipeline(["run", file, "--json"], proxied)
      expect(fresh.code, fresh.stderr).toBe(0)
      expect(cut).toBe(1)
      // Resumed from where the connection broke, not from the start.
      expect(requests.filter((r) => r.startsWith("GET") && r.includes("blob.bin")).map((r) => r.split(" ")[2] ?? "")).toEqual(["", expect.stringMatching(/^bytes=[1-9]\d*-$/)])
      expect(statuses(fresh.stdout)).toEqual(["blob:cached:pulled"])
      const entry = (JSON.parse(fresh.stdout) as RunJson).stages[0]!.outputs!.entry
      expect(sha(join(entry, "blob.bin"))).toBe(sha(blob))
    } finally {
      proxy.close()
    }
  })

  it("gc --remote removes what no pushed run record names, after a dry run, and keeps recent pushes", async () => {
    const file = pipelineFile("team-d")
    expect((await pipeline(["run", file, "--push", "--until", "tokenized"])).code).toBe(0)
    // seed 4: new entries, and the file's run record now names only them.
    const changed = file
    writeFileSync(changed, readFileSync(file, "utf8").replace("seed: 3", "seed: 4"))
    expect((await pipeline(["run", changed, "--push", "--until", "tokenized"])).code).toBe(0)
    const manifests = () => objects("team-d/entries").filter((o) => o.includes("manifest.json")).length
    expect(manifests()).toBe(4)
    // Everything was pushed moments ago: the grace period keeps it all.
    const kept = await pipeline(["gc", "--remote", file, "--json"])
    expect(kept.code, kept.stderr).toBe(0)
    expect(JSON.parse(kept.stdout)).toMatchObject({ removedEntries: 0, keptEntries: 4 })
    const dry = await pipeline(["gc", "--remote", file, "--dry-run", "--grace-hours", "0", "--json"])
    expect(JSON.parse(dry.stdout)).toMatchObject({ removedEntries: 2, keptEntries: 2 })
    expect(manifests()).toBe(4)
    // An unreadable run record might name live entries: gc removes nothing and says why.
    const record = objects("team-d/runs")[0]!
    const good = readFileSync(record)
    writeFileSync(record, good.toString().replace(/"parts": \[[^\]]*\]|"fingerprint": "[0-9a-f]{64}"/, '"fingerprint": 7'))
    const refused = await pipeline(["gc", "--remote", file, "--grace-hours", "0"])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/the run record s3:\/\/artifacts\/team-d\/runs\/\S+\.json cannot be read, so what it keeps is unknown; nothing was removed/)
    expect(manifests()).toBe(4)
    writeFileSync(record, good)
    const real = await pipeline(["gc", "--remote", file, "--grace-hours", "0", "--json"])
    expect(JSON.parse(real.stdout)).toMatchObject({ removedEntries: 2, keptEntries: 2 })
    expect(manifests()).toBe(2)
    const fresh = await pipeline(["run", changed, "--json", "--until", "tokenized"])
    expect(statuses(fresh.stdout)).toEqual(["problems:cached:pulled", "tokenized:cached:pulled", "train:skipped"])
  })

  it("two machines pushing one fingerprint with different bytes leave a whole entry: the first manifest with its own files", async () => {
    // Training's report holds its timings: the same fingerprint, other bytes on each machine.
    const file = pipelineFile("team-f")
    const [one, two] = [tempDir(), tempDir()]
    const runs = await Promise.all([one, two].map((cache) => cliAsync(["run", file, "--cache-dir", cache, "--json"], { env: { ...s3.env, PIPELINE_THREADS: "1", PIPELINE_REMOTE: `s3://${s3.bucket}/nowhere-f` } })))
    for (const run of runs) expect(run.code, run.stderr).toBe(0)
    const trainEntry = (run: CliResult) => (JSON.parse(run.stdout) as RunJson).stages[2]!
    expect(trainEntry(runs[0]!).fingerprint).toBe(trainEntry(runs[1]!).fingerprint)
    const digest = (run: CliResult) => (JSON.parse(readFileSync(join(trainEntry(run).outputs!.entry, "manifest.json"), "utf8")) as { outputDigest: string }).outputDigest
    expect(digest(runs[0]!)).not.toBe(digest(runs[1]!))
    // The race, step by step: machine one pushes whole; machine two, which looked before
    // one's manifest landed, uploads its files; its manifest loses (If-None-Match), one's stays.
    expect((await pipeline(["push", file, "--cache-dir", one])).code).toBe(0)
    const manifest = objects(`team-f/entries/${trainEntry(runs[0]!).fingerprint}`).find((o) => o.endsWith("manifest.json._S3rver_object"))!
    const first = readFileSync(manifest)
    expect((await pipeline(["push", file, "train", "--cache-dir", two])).stderr).toMatch(/train: already in the remote/)
    rmSync(manifest)
    expect((await pipeline(["push", file, "train", "--cache-dir", two])).stderr).toMatch(/✔ train: pushed/)
    writeFileSync(manifest, first)
    const fresh = await pipeline(["run", file, "--json"])
    expect(fresh.code, fresh.stderr).toBe(0)
    expect(statuses(fresh.stdout)).toEqual(["problems:cached:pulled", "tokenized:cached:pulled", "train:cached:pulled"])
    expect(digest(fresh)).toBe(digest(runs[0]!))
  })

  it("--force --push replaces the remote's entry; a machine whose own copy has other bytes takes the remote's", async () => {
    const file = pipelineFile("team-g")
    const trainOf = (run: CliResult) => (JSON.parse(run.stdout) as RunJson).stages[2]!
    const digestOf = (run: CliResult) => (JSON.parse(readFileSync(join(trainOf(run).outputs!.entry, "manifest.json"), "utf8")) as { outputDigest: string }).outputDigest
    const first = await pipeline(["run", file, "--push", "--json"])
    expect(first.code, first.stderr).toBe(0)
    const forced = await pipeline(["run", file, "--force", "train", "--push", "--json"])
    expect(forced.code, forced.stderr).toBe(0)
    expect(`${trainOf(forced).status}:${trainOf(forced).remote}`).toBe("ran:pushed")
    expect(digestOf(forced)).not.toBe(digestOf(first))
    const fresh = await pipeline(["run", file, "--json"])
    expect(digestOf(fresh)).toBe(digestOf(forced))

    const cache = tempDir()
    const own = await pipeline(["run", file, "--cache-dir", cache, "--json"], { PIPELINE_REMOTE: "off" })
    expect(digestOf(own)).not.toBe(digestOf(forced))
    const joined = await pipeline(["run", file, "--cache-dir", cache, "--push", "--json"])
    expect(joined.code, joined.stderr).toBe(0)
    expect(joined.stderr).toContain("train: the remote has this stage's entry already, made elsewhere with other bytes: using it")
    expect(digestOf(joined)).toBe(digestOf(forced))
  })

  it("bad settings are one clear error: a malformed remote, --push or --executor queue without one", async () => {
    const file = pipelineFile("team-e")
    const bad = await pipeline(["run", file], { PIPELINE_REMOTE: "s3://A_B/x" })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/PIPELINE_REMOTE: "A_B" is not an S3 bucket name/)
    const dir = tempDir()
    const plain = writeFile(dir, "plain.yaml", readFileSync(file, "utf8").replace(/^cache: .*$/m, ""))
    const push = await pipeline(["run", plain, "--push"])
    expect(push.code).toBe(2)
    expect(push.stderr).toMatch(/--push needs a remote store: set cache\.remote: s3:\/\/BUCKET\/PREFIX in .*plain\.yaml, or PIPELINE_REMOTE/)
    const noBucket = await pipeline(["run", file], { PIPELINE_REMOTE: "s3://no-such-bucket/x" })
    expect(noBucket.code).toBe(1)
    expect(noBucket.stderr).toMatch(/NoSuchBucket \(HTTP 404\).*: the bucket does not exist; create it, or fix cache\.remote \/ PIPELINE_REMOTE/)
    const wrong = writeFile(dir, "wrong.yaml", readFileSync(file, "utf8").replace(/^cache: .*$/m, "cache: { remote: http://example.com/x }"))
    const spec = await pipeline(["run", wrong])
    expect(spec.code).toBe(2)
    expect(spec.stderr).toMatch(/wrong\.yaml:2:\d+.*cache\.remote.*expected s3:\/\/BUCKET or s3:\/\/BUCKET\/PREFIX/s)
  })

  it("the canary credentials appear in no output and no file: caches, pipelines, the bucket", () => {
    expect(outputs.length).toBeGreaterThan(10)
    // The search finds a planted credential, in a text and in a file.
    const planted = tempDir()
    writeFileSync(join(planted, "config"), `secret = ${CANARY.secret}`)
    expect(canaryLeaks([`key ${CANARY.accessKey}`], [planted])).toHaveLength(2)
    expect(canaryLeaks(outputs.flatMap((o) => [o.stdout, o.stderr]), [...dirs, s3.dir])).toEqual([])
  })
})
