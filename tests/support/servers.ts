/**
 * Real servers on loopback for the many-machines tests: Redis from Debian
 * (`redis-server`; .ci/run installs it), an S3-compatible server (s3rver, from npm, in a
 * process of its own), and `pipeline worker` processes. Each starts on a free port and
 * is stopped by the test that started it. Nothing listens beyond 127.0.0.1.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdirSync, readdirSync, readFileSync } from "node:fs"
import { createServer } from "node:net"
import { join } from "node:path"
import { REPO, tempDir } from "../helpers.ts"

/** Credentials made for the tests, to be searched for afterwards: they must appear nowhere. */
export const CANARY = {
  accessKey: "AKIACANARY7Q4F2X9ZLM",
  secret: "canary-secret-0b7f9e1c5d2a4e6f8a1b3c5d7e9f"
}

/** Where the canary credentials appear: each text (as its first 200 characters) and each file under `dirs` that holds one. */
export const canaryLeaks = (texts: ReadonlyArray<string>, dirs: ReadonlyArray<string>): ReadonlyArray<string> => {
  const leaks: Array<string> = []
  const holds = (text: string) => text.includes(CANARY.accessKey) || text.includes(CANARY.secret)
  for (const text of texts) if (holds(text)) leaks.push(text.slice(0, 200))
  const scan = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) scan(path)
      else if (entry.isFile() && holds(readFileSync(path).toString("latin1"))) leaks.push(path)
    }
  }
  for (const dir of dirs) scan(dir)
  return leaks
}

const freePort = (): Promise<number> =>
  new Promise((done, fail) => {
    const server = createServer()
    server.unref()
    server.on("error", fail)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => (typeof address === "object" && address !== null ? done(address.port) : fail(new Error("no port"))))
    })
  })

const stopped = (child: ChildProcess) =>
  new Promise<void>((done) => {
    if (child.exitCode !== null || child.signalCode !== null) return done()
    child.once("exit", () => done())
    child.kill("SIGTERM")
    setTimeout(() => child.kill("SIGKILL"), 5000).unref()
  })

export interface RedisServer {
  readonly url: string
  readonly port: number
  readonly dir: string
  readonly cli: (...args: ReadonlyArray<string>) => string
  readonly stop: () => Promise<void>
}

const hasRedis = (): boolean => {
  try {
    execFileSync("redis-server", ["--version"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
}

/** redis-server on a free loopback port, without persistence (its folder holds a dump only on SAVE). */
export const startRedis = async (): Promise<RedisServer> => {
  if (!hasRedis()) throw new Error("redis-server is not installed: apt-get install -y redis-server (.ci/run installs it)")
  const dir = tempDir("redis-")
  for (let attempt = 0; ; attempt++) {
    const port = await freePort()
    const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], { stdio: ["ignore", "pipe", "pipe"] })
    let log = ""
    child.stdout!.on("data", (chunk: Buffer) => (log += chunk.toString()))
    const up = await new Promise<boolean>((done) => {
      const timer = setInterval(() => {
        if (log.includes("Ready to accept connections")) {
          clearInterval(timer)
          done(true)
        }
      }, 50)
      child.once("exit", () => {
        clearInterval(timer)
        done(false)
      })
    })
    if (!up) {
      if (attempt < 3) continue // the port was taken in between: another
      throw new Error(`redis-server did not start: ${log}`)
    }
    return {
      url: `redis://127.0.0.1:${port}`,
      port,
      dir,
      cli: (...args) => execFileSync("redis-cli", ["-p", String(port), ...args], { encoding: "utf8" }),
      stop: () => stopped(child)
    }
  }
}

export interface S3Server {
  /** The endpoint, for AWS_ENDPOINT_URL. */
  readonly endpoint: string
  readonly bucket: string
  /** The folder the server keeps objects in: `<dir>/<bucket>/<key>._S3rver_object`. */
  readonly dir: string
  /** What a process needs to reach it, with the canary credentials. */
  readonly env: Record<string, string>
  readonly stop: () => Promise<void>
}

/** An S3-compatible server (s3rver) on a free loopback port, checking signatures against the canary credentials. */
export const startS3 = async (bucket = "artifacts"): Promise<S3Server> => {
  const dir = tempDir("s3-")
  const child = spawn(process.execPath, ["--import", "tsx", join(REPO, "tests/support/s3-server.ts"), dir, bucket, CANARY.accessKey, CANARY.secret], {
    cwd: REPO,
    stdio: ["ignore", "pipe", "pipe"]
  })
  let out = ""
  let err = ""
  child.stderr!.on("data", (chunk: Buffer) => (err += chunk.toString()))
  const port = await new Promise<number>((done, fail) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      const match = /\{"port":(\d+)\}/.exec(out)
      if (match) done(Number(match[1]))
    })
    child.once("exit", (code) => fail(new Error(`the S3 server exited (${code}): ${err}`)))
  })
  const endpoint = `http://127.0.0.1:${port}`
  return {
    endpoint,
    bucket,
    dir,
    env: {
      AWS_ENDPOINT_URL: endpoint,
      AWS_ACCESS_KEY_ID: CANARY.accessKey,
      AWS_SECRET_ACCESS_KEY: CANARY.secret,
      AWS_REGION: "us-east-1",
      // No ~/.aws of the machine running the tests.
      AWS_CONFIG_FILE: join(dir, "no-config"),
      AWS_SHARED_CREDENTIALS_FILE: join(dir, "no-credentials")
    },
    stop: () => stopped(child)
  }
}

export interface WorkerProcess {
  readonly child: ChildProcess
  readonly cacheDir: string
  /** Everything it printed so far. */
  readonly output: () => string
  readonly stop: () => Promise<void>
}

/** `pipeline worker` in its own process. */
export const startWorker = (queue: string, cacheDir: string, env: Record<string, string>, extra: ReadonlyArray<string> = []): WorkerProcess => {
  mkdirSync(cacheDir, { recursive: true })
  const child = spawn(process.execPath, [join(REPO, "bin/pipeline.js"), "worker", "--queue", queue, "--cache-dir", cacheDir, ...extra], {
    cwd: REPO,
    env: { ...process.env, ...env, FORCE_COLOR: "0" },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()))
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()))
  return { child, cacheDir, output: () => output, stop: () => stopped(child) }
}

/** Waits until `check` holds, polling; fails with `what` after `timeoutMs`. */
export const until = async (what: string, check: () => boolean, timeoutMs = 120_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((done) => setTimeout(done, 100))
  }
}
