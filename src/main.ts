/**
 * The process entry point: wires the platform layer once and turns the exit
 * code of `runCommand` into the process's (130 when interrupted by Ctrl-C).
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Effect, Exit } from "effect"
import { runCommand } from "./program.ts"

NodeRuntime.runMain(runCommand(process.argv).pipe(Effect.provide(NodeContext.layer)), {
  disableErrorReporting: true,
  teardown: (exit, onExit) => {
    if (Exit.isSuccess(exit)) {
      // Exit once stdout and stderr have flushed (a bare process.exit() could cut off
      // --json output still going into a pipe), without waiting for idle keep-alive
      // sockets or anything else to let go of the event loop.
      const code = Number(exit.value)
      process.exitCode = code
      process.stdout.write("", () => process.stderr.write("", () => process.exit(code)))
    } else if (Cause.isInterruptedOnly(exit.cause)) {
      process.stderr.write("interrupted: finished stages are cached; run again to go on\n")
      onExit(130)
    } else {
      process.stderr.write(`internal error: ${Cause.pretty(exit.cause)}\n`)
      onExit(70)
    }
  }
})
