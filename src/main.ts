/**
 * The entry point: wires the layers once, runs the CLI, and maps every error to
 * one message and an exit code (0 ok, 1 a stage failed, 2 a bad command or file,
 * 130 interrupted).
 */
import { ValidationError } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Effect, Exit } from "effect"
import { cli } from "./cli.ts"
import { exitCodeOf, type UserError } from "./errors.ts"

const USER_ERRORS = new Set(["SpecError", "UsageError", "StageError", "RunFailed", "StoreError", "LockError"])

const isUserError = (error: unknown): error is UserError =>
  typeof error === "object" && error !== null && USER_ERRORS.has((error as { _tag?: string })._tag ?? "")

const program = cli(process.argv).pipe(
  Effect.as(0),
  Effect.catchAll((error) => {
    if (ValidationError.isValidationError(error)) return Effect.succeed(2) // @effect/cli already printed it
    if (isUserError(error)) {
      // A failed run has reported each stage already; the rest say what went wrong here.
      const prefix = error._tag === "RunFailed" ? "" : "error: "
      return Effect.sync(() => process.stderr.write(`${prefix}${error.message}\n`)).pipe(Effect.as(exitCodeOf(error)))
    }
    return Effect.sync(() => process.stderr.write(`error: ${String((error as Error)?.message ?? error)}\n`)).pipe(Effect.as(1))
  }),
  Effect.provide(NodeContext.layer)
)

NodeRuntime.runMain(program, {
  disableErrorReporting: true,
  teardown: (exit, onExit) => {
    if (Exit.isSuccess(exit)) {
      // Not process.exit(): that could cut off --json output still flushing to a pipe.
      process.exitCode = Number(exit.value)
      onExit(0)
    } else if (Cause.isInterruptedOnly(exit.cause)) {
      process.stderr.write("interrupted: finished stages are cached; run again to go on\n")
      onExit(130)
    } else {
      process.stderr.write(`internal error: ${Cause.pretty(exit.cause)}\n`)
      onExit(70)
    }
  }
})
