/**
 * Hostile or mistaken input from the command line, the pipeline file, the data and the
 * machine: each is a clean, located error with the right exit code (2 for a bad command
 * line or file, 1 for a failure while working), never an internal error (70), a hang,
 * or something silently dropped.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Effect, Either, Exit, Scope } from "effect"
import { spawn } from "node:child_process"
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import { hostname } from "node:os"
import { delimiter, join } from "node:path"
import { describe, expect, it } from "vitest"
import { compileExpression, compilePredicate } from "../src/expression.ts"
import { acquireLock } from "../src/lock.ts"
import { cliAsync, cliInProcess, GSM8K_TEST, projectTempDir, REPO, samplePipeline, tempDir, writeFile } from "./helpers.ts"

const noInternalError = (stderr: string) => {
  expect(stderr).not.toContain("internal error")
  expect(stderr).not.toMatch(/\n\s+at /)
}

describe("--set", () => {
  it("through a scalar, or on a stage whose with: is a scalar, is a usage error (exit 2) naming the flag, the path and what is there", async () => {
    const dir = tempDir()
    const cache = tempDir()
    const file = writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST, "  scalar: { uses: shuffle, needs: [data], with: 5 }\n"))
    const through = await cliInProcess(["run", file, "--cache-dir", cache, "--set", "shuffled.seed.x=1"])
    expect(through.code).toBe(2)
    expect(through.stderr).toBe(`error: --set shuffled.seed.x=1: stages.shuffled.with.seed is a number (42) at ${file}:9:19, not a map, so it has no key "x" to set\n`)
    const onScalar = await cliInProcess(["run", file, "--cache-dir", cache, "--set", "scalar.seed=1"])
    expect(onScalar.code).toBe(2)
    expect(onScalar.stderr).toBe(`error: --set scalar.seed=1: stages.scalar.with is a number (5) at ${file}:14:49, not a map of params, so it has no key "seed" to set\n`)
    noInternalError(through.stderr + onScalar.stderr)
  })
})

describe("plug-in loading", () => {
  it("times out a module whose top-level await never settles, at its uses:, naming the way to allow longer", async () => {
    const dir = projectTempDir()
    writeFile(dir, "hang.ts", "await new Promise(() => {})\nexport default undefined\n")
    const file = writeFile(dir, "p.yaml", `stages:\n  data: { uses: fetch, with: { path: ${JSON.stringify(GSM8K_TEST)} } }\n  stuck: { uses: ./hang.ts, needs: [data] }\n`)
    const started = Date.now()
    const result = await cliAsync(["run", file, "--cache-dir", tempDir()], { env: { PIPELINE_PLUGIN_LOAD_TIMEOUT: "1" }, timeoutMs: 60_000 })
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/^error: \S*p\.yaml:3:18 stages\.stuck\.uses: /)
    expect(result.stderr).toContain(
      "stages.stuck.uses: the stage module ./hang.ts did not finish loading within 1 s (does its top-level code wait for something, such as a top-level await that never settles?); if it needs longer, set PIPELINE_PLUGIN_LOAD_TIMEOUT=<seconds>\n"
    )
    expect(Date.now() - started).toBeLessThan(45_000)
    const bad = await cliAsync(["dag", file], { env: { PIPELINE_PLUGIN_LOAD_TIMEOUT: "soon" }, timeoutMs: 60_000 })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain("stages.stuck.uses: PIPELINE_PLUGIN_LOAD_TIMEOUT=soon: expected a number of seconds greater than 0 (default 60)")
  })
})

describe("__proto__", () => {
  it("as a stage id or a with: key is an error (exit 2), not a stage or param that vanishes", async () => {
    const dir = tempDir()
    const file = writeFile(dir, "p.yaml", `stages:
  data: { uses: fetch, with: { path: ${JSON.stringify(GSM8K_TEST)} } }
  __proto__: { uses: shuffle, needs: [data] }
  shuffled: { uses: shuffle, needs: [data], with: { __proto__: { seed: 7 } } }
`)
    const result = await cliInProcess(["run", file, "--cache-dir", tempDir()])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain(`${file}:3:3 stages.__proto__: invalid stage id "__proto__"`)
    expect(result.stderr).toContain(`${file}:4:53 stages.shuffled.with.__proto__: invalid key "__proto__"`)
  })

  it("as a data column fails the stage reading it, at the file's line", async () => {
    const dir = tempDir()
    const data = writeFile(dir, "rows.jsonl", `{"question":"a"}\n{"question":"b","__proto__":"x"}\n`)
    const file = writeFile(dir, "p.yaml", samplePipeline(data))
    const result = await cliInProcess(["run", file, "--cache-dir", tempDir()])
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(`${data}:2: column name "__proto__" is reserved in JavaScript (its values would be lost): rename the column`)
  })

  it("and Object.prototype's names are not operators, transforms or functions in expressions", () => {
    const constructor = Either.getOrThrow(compileExpression("constructor + 1"))
    expect(constructor.names).toEqual(["constructor"])
    expect(constructor.evaluate({ constructor: 1 })).toBe(2)
    expect(Either.getOrThrow(compilePredicate("toString"))({ question: "q" })).toBe(false)
    expect(compileExpression("question|constructor")).toEqual(Either.left('unknown transform "constructor" (transforms: len, lower, upper, trim)'))
    expect(compileExpression("valueOf(question)")).toEqual(Either.left('unknown function "valueOf" (functions: contains)'))
    for (const source of ["__proto__", "question.__proto__", "{__proto__: 1}"]) {
      expect(compileExpression(source)).toEqual(Either.left('"__proto__" cannot name a column, a property or a key: JavaScript reserves the name'))
    }
  })
})

describe("deep nesting", () => {
  it("a JSON line nested 100,000 levels deep fails its stage at file:line, without a stack overflow", async () => {
    const dir = tempDir()
    const data = writeFile(dir, "rows.jsonl", `{"question":"a"}\n{"question":"b","x":${"[".repeat(100_000)}${"]".repeat(100_000)}}\n`)
    const file = writeFile(dir, "p.yaml", samplePipeline(data))
    const result = await cliInProcess(["run", file, "--cache-dir", tempDir()])
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(`${data}:2: column "x" is nested more than 1000 levels deep`)
    expect(result.stderr).not.toContain("Maximum call stack")
  })

  it("an expression deeper than the evaluator can go is refused when the file is read", async () => {
    expect(compileExpression(`question${".length".repeat(3)} > 1`)._tag).toBe("Right")
    const tooDeep = Either.left("the expression nests more than 256 levels deep (operators or brackets inside each other); split it into map columns")
    expect(compileExpression(`a${"+a".repeat(3000)}`)).toEqual(tooDeep)
    expect(compileExpression(`!${"!".repeat(3000)}a`)).toEqual(tooDeep)
    // Refused at once: Jexl itself would take minutes over this, then overflow.
    const started = Date.now()
    expect(compileExpression(`${"(".repeat(100_000)}a${")".repeat(100_000)}`)).toEqual(tooDeep)
    expect(compileExpression(`${"[".repeat(100_000)}${"]".repeat(100_000)}`)).toEqual(tooDeep)
    expect(Date.now() - started).toBeLessThan(10_000)
    // Brackets inside strings are text.
    expect(Either.getOrThrow(compileExpression(`question == '${"(".repeat(300)}'`)).evaluate({ question: "(".repeat(300) })).toBe(true)
  })
})

/** A lock file as `pipeline run` writes one, with the given holder. */
const writeLock = (cache: string, holder: Record<string, unknown>) =>
  writeFileSync(join(cache, "lock"), JSON.stringify({ command: "pipeline run sample", startedAt: new Date(Date.now() - 3_600_000).toISOString(), ...holder }))

/** A live process that is not a pipeline, standing for one that got a dead run's pid. */
const withStranger = async (use: (pid: number) => Promise<void>) => {
  const stranger = spawn("sleep", ["300"], { stdio: "ignore" })
  try {
    await use(stranger.pid!)
  } finally {
    stranger.kill("SIGKILL")
  }
}

describe("the cache lock", () => {
  it("of another host is refused, pointing at pipeline unlock, which shows the holder and clears it with --yes", async () => {
    const cache = tempDir()
    writeLock(cache, { pid: 4242, host: "elsewhere" })
    const refused = await cliInProcess(["gc", "--cache-dir", cache])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toBe(
      `error: the cache ${cache} is in use by pid 4242 on elsewhere (pipeline run sample, started 60 min ago). This host cannot see elsewhere's processes: wait for it to finish, or give this run another --cache-dir. If pid 4242 no longer runs on elsewhere (check there: ps -p 4242), \`pipeline unlock --cache-dir ${cache}\` shows the holder and clears a stale lock.\n`
    )
    // Without a terminal to ask on, unlock needs --yes.
    const unasked = await cliInProcess(["unlock", "--cache-dir", cache])
    expect(unasked.code).toBe(2)
    expect(unasked.stderr).toContain(`error: not removing the lock without a terminal to ask on: run pipeline unlock --yes --cache-dir ${cache} to remove it`)
    expect(existsSync(join(cache, "lock"))).toBe(true)
    const unlocked = await cliInProcess(["unlock", "--cache-dir", cache, "--yes"])
    expect(unlocked.code).toBe(0)
    expect(unlocked.stderr).toMatch(new RegExp([
      `${cache}/lock is held by:`,
      "  pid:     4242",
      "  host:    elsewhere",
      "  command: pipeline run sample",
      "  since:   \\S+Z \\(60 min ago\\)",
      "  now:     on another host: check there whether pid 4242 still runs \\(ps -p 4242\\)",
      `removed ${cache}/lock`
    ].join("\n")))
    expect(existsSync(join(cache, "lock"))).toBe(false)
    expect((await cliInProcess(["gc", "--cache-dir", cache])).code).toBe(0)
    expect(await cliInProcess(["unlock", "--cache-dir", cache])).toMatchObject({ code: 0, stderr: `the cache ${cache} is not locked\n` })
  })

  it("held by a pid that another program now has is taken over when the start time proves it, else refused and cleared by unlock", async () => {
    await withStranger(async (pid) => {
      const cache = tempDir()
      // The lock records its process's start time; the stranger's differs.
      writeLock(cache, { pid, host: hostname(), processStart: "1" })
      expect((await cliInProcess(["gc", "--cache-dir", cache])).code).toBe(0)
      expect(existsSync(join(cache, "lock"))).toBe(false)
      // A lock from before start times were recorded: the stranger does not look like a pipeline, but nothing proves it.
      writeLock(cache, { pid, host: hostname() })
      const refused = await cliInProcess(["gc", "--cache-dir", cache])
      expect(refused.code).toBe(1)
      expect(refused.stderr).toContain(`Pid ${pid} now runs sleep 300, which does not look like a pipeline: if the pid was reused after that run died, \`pipeline unlock --cache-dir ${cache}\` shows the holder and clears a stale lock.`)
      const unlocked = await cliInProcess(["unlock", "--cache-dir", cache, "--yes"])
      expect(unlocked.code).toBe(0)
      expect(unlocked.stderr).toContain(`  now:     pid ${pid} runs sleep 300, which does not look like a pipeline: the lock is probably stale`)
      expect(existsSync(join(cache, "lock"))).toBe(false)
    })
  })

  it("held by a live pipeline on this host is not removed by unlock, even with --yes", async () => {
    const cache = tempDir()
    const scope = Effect.runSync(Scope.make())
    await Effect.runPromise(acquireLock(join(cache, "lock"), "pipeline run sample").pipe(Scope.extend(scope), Effect.provide(NodeContext.layer)))
    try {
      const result = await cliInProcess(["unlock", "--cache-dir", cache, "--yes"])
      expect(result.code).toBe(1)
      expect(result.stderr).toContain(`  pid:     ${process.pid}\n`)
      expect(result.stderr).toContain(`error: pid ${process.pid} is a pipeline running on this host: wait for it to finish, or stop it`)
      expect(existsSync(join(cache, "lock"))).toBe(true)
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
    expect(existsSync(join(cache, "lock"))).toBe(false)
  })

  // util-linux's `script` gives the CLI a real terminal; found on PATH without running anything.
  const hasScript = (process.env.PATH ?? "").split(delimiter).some((dir) => dir !== "" && existsSync(join(dir, "script")))

  it.skipIf(!hasScript)("asks on a terminal before removing the lock", async () => {
    const cache = tempDir()
    writeLock(cache, { pid: 4242, host: "elsewhere" })
    /** `pipeline unlock` on a pseudo-terminal (util-linux `script`), answering `key` once it asks. */
    const answer = (key: string) =>
      new Promise<{ code: number | null; output: string }>((done, fail) => {
        const child = spawn("script", ["-qec", `${process.execPath} ${join(REPO, "bin/pipeline.js")} unlock --cache-dir ${cache}`, "/dev/null"], {
          env: { ...process.env, FORCE_COLOR: "0" },
          stdio: ["pipe", "pipe", "pipe"]
        })
        let output = ""
        let answered = false
        const timer = setTimeout(() => child.kill("SIGKILL"), 60_000)
        child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
          output += chunk
          if (!answered && output.includes("(y/N)")) {
            answered = true
            child.stdin.write(key)
            setTimeout(() => child.stdin.write("\r"), 200)
          }
        })
        child.on("error", fail)
        child.on("close", (code) => {
          clearTimeout(timer)
          child.stdin.destroy()
          done({ code, output })
        })
      })
    const declined = await answer("n")
    expect(declined.output).toContain("pid:     4242")
    expect(declined.output).toContain(`Remove ${cache}/lock?`)
    expect(declined.code).toBe(1)
    expect(declined.output).toContain(`error: kept ${cache}/lock`)
    expect(readFileSync(join(cache, "lock"), "utf8")).toContain('"pid":4242')
    const confirmed = await answer("y")
    expect(confirmed.code).toBe(0)
    expect(confirmed.output).toContain(`removed ${cache}/lock`)
    expect(existsSync(join(cache, "lock"))).toBe(false)
  })
})

describe("pipeline generate", () => {
  const generate = (...flags: ReadonlyArray<string>) => cliInProcess(["generate", "--model", "./no-such-model", "--prompt", "Hi", ...flags])

  it("refuses values outside what each option allows, with exit 2, before loading anything", async () => {
    const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
      [["--max-new-tokens", "-1"], "--max-new-tokens -1: expected a whole number of tokens, 1 or more"],
      [["--max-new-tokens", "0"], "--max-new-tokens 0: expected a whole number of tokens, 1 or more"],
      [["--sample", "--temperature", "0"], "--temperature 0: expected a number greater than 0 (the logits are divided by it; 1 leaves them as they are)"],
      [["--sample", "--temperature", "-0.5"], "--temperature -0.5: expected a number greater than 0"],
      [["--sample", "--top-k", "-1"], "--top-k -1: expected a whole number, 0 or more (0 keeps every token)"],
      [["--sample", "--top-p", "0"], "--top-p 0: expected a number greater than 0 and at most 1 (1 keeps every token)"],
      [["--sample", "--top-p", "1.5"], "--top-p 1.5: expected a number greater than 0 and at most 1"],
      [["--sample", "--seed", "-3"], "--seed -3: expected a whole number, 0 or more"],
      [["--threads", "0"], "--threads 0: expected a whole number of threads, 1 or more"],
      [["--sample", "--temperature", "0", "--top-p", "2"], "--temperature 0: expected a number greater than 0 (the logits are divided by it; 1 leaves them as they are)\n--top-p 2: expected"]
    ]
    for (const [flags, message] of cases) {
      const result = await generate(...flags)
      expect(result.code, flags.join(" ")).toBe(2)
      expect(result.stderr, flags.join(" ")).toContain(`error: ${message}`)
      expect(result.stdout).toBe("")
    }
    const empty = await cliInProcess(["generate", "--model", "./no-such-model", "--prompt", ""])
    expect(empty.code).toBe(2)
    expect(empty.stderr).toContain('error: --prompt "": expected the text to continue')
  })
})
