#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx: no build step after `npm install`,
// and plug-in stages written in TypeScript load the same way.
import { register } from "tsx/esm/api"

register()
await import("../src/main.ts")
