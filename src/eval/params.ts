/**
 * Param building blocks of the model stages (`evaluate`, `generate`). Descriptions sit
 * on the property signatures: `pipeline schema` shows the encoded side, where those
 * survive and a description on a refined type does not.
 */
import { Schema } from "effect"

export const Count = Schema.Int.pipe(Schema.positive())

export const Text = Schema.String.pipe(Schema.minLength(1))

export const optional = <A, I>(schema: Schema.Schema<A, I>, description: string) => Schema.optional(schema).annotations({ description })

export const withDefault = <A, I>(schema: Schema.Schema<A, I>, value: A, description: string) =>
  Schema.optionalWith(schema, { default: () => value }).annotations({ description })
