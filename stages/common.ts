/** Params shared by the dataset → dataset stages. */
import { Schema } from "effect"

export const Splits = Schema.optional(Schema.Array(Schema.String).pipe(Schema.minItems(1))).annotations({
  description: "The splits to act on (default: all); the others pass through unchanged"
})
