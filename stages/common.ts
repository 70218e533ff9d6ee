/** Params shared by the dataset → dataset stages. */
import { Schema } from "effect"
import { DEFAULT_BATCH_ROWS } from "../src/arrow-file.ts"

export const Splits = Schema.optional(Schema.Array(Schema.String).pipe(Schema.minItems(1))).annotations({
  description: "The splits to act on (default: all); the others pass through unchanged"
})

/**
 * Rows per record batch, read and written: what bounds a stage's memory. Part of the
 * fingerprint, since the output files' record batches have this many rows.
 */
export const batchSize = (byDefault: number = DEFAULT_BATCH_ROWS, what = "") =>
  Schema.optionalWith(
    Schema.Int.pipe(Schema.positive()).annotations({
      description: `Rows per record batch, read and written${what}: memory grows with it (default ${byDefault})`
    }),
    { default: () => byDefault }
  )
