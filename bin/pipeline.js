#!/usr/bin/env node
// Starts from the start-up bundle (bin/bundle.js: src/ compiled by esbuild, rebuilt
// whenever a source file changes). Without it, runs the TypeScript sources through tsx.
import { bundleEntry } from "./bundle.js"

const entry = await bundleEntry()
if (entry !== undefined) {
  await import(entry)
} else {
  const { register } = await import("tsx/esm/api")
  register()
  await import("../src/main.ts")
}
