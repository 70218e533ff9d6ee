import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: the CLI tests spawn child processes of their own.
    maxWorkers: 2,
    minWorkers: 1
  }
})
