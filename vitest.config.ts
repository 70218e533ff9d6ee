import { defineConfig } from "vitest/config"

/**
 * Two projects. `shared` holds the test files that leave no state behind in the process
 * (no TensorFlow.js engine: tensors, the wasm heap, the chosen backend; no process-wide
 * setting), so `npm test` runs them without isolation (`--no-isolate`): each worker loads
 * effect, arrow and the program once (about 1 s of CPU a file otherwise, and several on a
 * busy machine). `isolated` holds every other file, a new one included: a fresh process
 * each, as vitest does by default.
 */
const SHARED = [
  "cache-hardening",
  "cached-part",
  "cli",
  "code-version",
  "eval-scoring",
  "fingerprint",
  "formats",
  "formats-columnar",
  "formats-stream",
  "hub",
  "hub-hostile",
  "hub-layout",
  "hub-retry",
  "inputs-hardening",
  "map",
  "matrix",
  "plugin",
  "property",
  "property-seed",
  "random",
  "spec",
  "store",
  "tokenizer",
  "word-problems"
].map((name) => `tests/${name}.test.ts`)

export default defineConfig({
  test: {
    // Generous: on a busy machine every child process is slower (tests that need longer say so).
    testTimeout: 300_000,
    hookTimeout: 300_000,
    // Two cores: the CLI tests spawn child processes of their own.
    maxWorkers: 2,
    minWorkers: 1,
    projects: [
      { extends: true, test: { name: "shared", include: SHARED } },
      { extends: true, test: { name: "isolated", include: ["tests/**/*.test.ts"], exclude: SHARED } }
    ]
  }
})
