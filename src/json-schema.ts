/**
 * `pipeline schema`: a JSON Schema of pipeline files, every built-in stage's
 * params included, generated from the Effect Schemas. With yaml-language-server,
 * editors complete and check pipeline files as the user types:
 *
 *   # yaml-language-server: $schema=../pipeline.schema.json
 */
import { JSONSchema, Schema, SchemaAST } from "effect"
import type { AnyStage } from "./registry.ts"
import { STAGE_ID } from "./constants.ts"

type JsonObject = Record<string, unknown>

/**
 * Params are decoded, so the schema users write is the encoded side ("I"), with its
 * refinements (integers, minimums). That side loses the descriptions written on
 * params with defaults, so they are copied over from the decoded side.
 */
const paramsSchema = (definition: AnyStage, definitions: Record<string, JSONSchema.JsonSchema7>): JsonObject => {
  const schema = JSONSchema.fromAST(Schema.encodedBoundSchema(definition.params).ast, {
    definitions,
    definitionPath: "#/definitions/",
    topLevelReferenceStrategy: "skip"
  }) as unknown as JsonObject
  const properties = schema.properties as Record<string, JsonObject> | undefined
  for (const [name, description] of propertyDescriptions(definition.params.ast)) {
    const property = properties?.[name]
    if (property !== undefined) property.description = description
  }
  return schema
}

/** Descriptions annotated on a struct's property signatures, through refinements and transformations. */
const propertyDescriptions = (ast: SchemaAST.AST): ReadonlyArray<readonly [string, string]> => {
  switch (ast._tag) {
    case "Transformation":
      return [...propertyDescriptions(ast.from), ...propertyDescriptions(ast.to)]
    case "Refinement":
      return propertyDescriptions(ast.from)
    case "TypeLiteral":
      return ast.propertySignatures.flatMap((p) => {
        const description = p.annotations[SchemaAST.DescriptionAnnotationId]
        return typeof description === "string" ? [[String(p.name), description] as const] : []
      })
    default:
      return []
  }
}

export const pipelineJsonSchema = (stages: ReadonlyArray<readonly [string, AnyStage]>): JsonObject => {
  const definitions: Record<string, JSONSchema.JsonSchema7> = {}
  const conditions = stages.map(([name, definition]) => {
    const params: JsonObject = { description: definition.description, ...paramsSchema(definition, definitions) }
    // A matrix may supply required params: with one, `with:` need not hold them.
    const { required: _required, ...lax } = params
    return {
      if: { properties: { uses: { const: name } } },
      then: { if: { required: ["matrix"] }, then: { properties: { with: lax } }, else: { properties: { with: params } } }
    }
  })
  const common = {
    description: { type: "string" },
    needs: {
      description: "The stages whose outputs this stage reads",
      oneOf: [{ type: "string" }, { type: "array", items: { type: "string" } }]
    },
    matrix: {
      description: "A sweep: each param (learning_rate, or a dotted path such as lora.r) with the values to try; the stage, and every stage below it, runs once per combination",
      type: "object",
      propertyNames: { pattern: "^[^.]+(\\.[^.]+)*$" },
      additionalProperties: { type: "array", minItems: 1, uniqueItems: true, items: { type: ["number", "string", "boolean"] } }
    }
  }
  return {
    $schema: "http://json-schema.org/draft-07/schema#",
    title: "Pipeline file",
    type: "object",
    additionalProperties: false,
    required: ["stages"],
    properties: {
      name: { type: "string", pattern: STAGE_ID.source },
      description: { type: "string" },
      cache: {
        description: "Where entries are shared",
        type: "object",
        additionalProperties: false,
        properties: {
          remote: {
            description: "The remote artifact store shared by machines and CI: s3://BUCKET/PREFIX (PIPELINE_REMOTE overrides it; PIPELINE_REMOTE=off turns it off)",
            type: "string",
            pattern: "^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
          }
        }
      },
      stages: {
        type: "object",
        propertyNames: { pattern: STAGE_ID.source },
        additionalProperties: {
          type: "object",
          required: ["uses"],
          properties: { uses: { type: "string" }, with: { type: "object" }, ...common },
          additionalProperties: false,
          allOf: conditions
        }
      }
    },
    definitions
  }
}
