import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    // Generous: on a busy machine every child process is slower (tests that need longer say so).
    testTimeout: 300_000,
    hookTimeout: 300_000,
    // Two cores: the CLI tests spawn child processes of their own.
    maxWorkers: 2,
    minWorkers: 1
  }
})
