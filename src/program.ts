/**
 * The CLI as one Effect that never fails: every error becomes one message on
 * stderr and an exit code (0 ok, 1 a stage failed, 2 a bad command or file).
 * `main.ts` runs it as the process; tests run it in-process.
 */
import { ValidationError } from "@effect/cli"
import { Effect } from "effect"
import { cli } from "./cli.ts"
import { exitCodeOf, isUserError } from "./errors.ts"

const say = (text: string) => Effect.sync(() => process.stderr.write(text))

/** `argv` as in `process.argv`: the first two entries are the runtime and the script. */
export const runCommand = (argv: ReadonlyArray<string>) =>
  cli(argv).pipe(
    Effect.as(0),
    Effect.catchAll((error) => {
      if (ValidationError.isValidationError(error)) return Effect.succeed(2) // @effect/cli already printed it
      if (isUserError(error)) {
        // A failed run has reported each stage already; the rest say what went wrong here.
        return say(`${error._tag === "RunFailed" ? "" : "error: "}${error.message}\n`).pipe(Effect.as(exitCodeOf(error)))
      }
      return say(`error: ${String((error as Error)?.message ?? error)}\n`).pipe(Effect.as(1))
    })
  )
