/**
 * `tokenize`: text columns → `input_ids`, `labels` (List<Int32>) and `length` (Int32).
 *
 * By default as the tutorial does it: prompt and completion are tokenized apart, without
 * special tokens; the completion gets EOS; the labels are -100 over the prompt, so the
 * loss counts the answer only. `template` builds the prompt from several columns,
 * `chat_template` wraps the pair in the tokenizer's chat format, and `text` tokenizes
 * plain documents for continued pre-training, optionally packed into fixed-length blocks.
 */
import { type Data, DataType, Field, Int32, makeData, RecordBatch, Schema as ArrowSchema, Struct } from "apache-arrow"
import { Effect, Either, Schema, Stream } from "effect"
import { int32ListVector, toPlain } from "../src/arrow.ts"
import { DEFAULT_BATCH_ROWS } from "../src/arrow-file.ts"
import { inputDataset, streamSplits } from "../src/dataset.ts"
import { StageError } from "../src/errors.ts"
import { defineStage } from "../src/stage.ts"
import { availableParallelism } from "node:os"
import { chatTurns, fileList, loadTokenizer, resolveTokenizerDir, type Tokenizer, type TokenizerError, tokenizerFiles, tokenizerRevision, tokenizerSource } from "../src/tokenizer.ts"
import { BlockPacker } from "../src/tokenizer/pack.ts"
import { encodePool } from "../src/tokenizer/pool.ts"
import { IGNORE_INDEX } from "../src/constants.ts"
import { Splits } from "./common.ts"
import { parseTemplate, type TemplatePart } from "../src/template.ts"

const ColumnName = Schema.String.pipe(Schema.minLength(1))

const flag = (description: string, byDefault: boolean) =>
  Schema.optionalWith(Schema.Boolean.annotations({ description }), { default: () => byDefault })

const positiveInt = (description: string) => Schema.Number.annotations({ description }).pipe(Schema.int(), Schema.positive())

const Template = Schema.String.annotations({
  description: "The prompt built from columns instead of `prompt`, such as \"Question: {question}\\nAnswer:\" ({{ and }} for literal braces)"
}).pipe(
  Schema.filter((source) => Either.match(parseTemplate(source), { onLeft: (why) => `invalid template: ${why}`, onRight: () => true }))
)

const Params = Schema.Struct({
  tokenizer: Schema.String.annotations({
    description: "A hub model id (Qwen/Qwen2.5-0.5B: its tokenizer files, pinned by commit) or a folder holding tokenizer.json and tokenizer_config.json, relative to the pipeline file"
  }),
  prompt: Schema.optional(ColumnName).annotations({ description: "The column with the prompt (the question); its tokens are masked from the loss" }),
  completion: Schema.optional(ColumnName).annotations({ description: "The column with what the model learns to write (the answer)" }),
  template: Schema.optional(Template),
  chat_template: flag(
    "Render the prompt as a user message and the completion as the assistant's reply with the tokenizer's chat template; only the reply is learned (default false)",
    false
  ),
  text: Schema.optional(ColumnName).annotations({ description: "Continued pre-training: the column of plain documents, learned whole (labels = input_ids)" }),
  mask_prompt: flag("Set the prompt's labels to -100 so the loss counts the completion only (default true)", true),
  append_eos: Schema.optional(Schema.Boolean.annotations({
    description: "Append the EOS token after the completion or document (default true; false with chat_template, whose template ends the turn)"
  })),
  keep: Schema.optionalWith(
    Schema.Array(Schema.String).annotations({
      description: "Input columns carried into the output beside input_ids, labels and length (such as answer, for scoring)"
    }),
    { default: () => [] }
  ),
  pack: Schema.optional(Schema.Struct({
    block_size: positiveInt(
      "Text mode: concatenate the documents, EOS after each, and cut them into blocks of this many tokens (the last partial block is dropped)"
    )
  })),
  splits: Splits,
  batch_size: Schema.optionalWith(positiveInt("Rows tokenized at a time, and per output record batch (default 1000; packed blocks are written 16,384 to a record batch)"), {
    default: () => 1000
  }),
  workers: Schema.optional(positiveInt(
    "Worker threads that tokenize (default: one per core; 1 tokenizes in the main thread). Used from 2 batches of input on; the ids do not depend on it"
  ))
}).pipe(Schema.filter((p) => {
  if ([p.prompt, p.template, p.text].filter((x) => x !== undefined).length !== 1) {
    return "give exactly one of prompt (a column), template (columns in a pattern) or text (plain documents)"
  }
  if (p.text !== undefined) {
    if (p.completion !== undefined) return "completion does not apply to text mode: the whole text is learned"
    if (p.chat_template) return "chat_template needs prompt (or template) and completion, not text"
    if (p.pack !== undefined && p.keep.length > 0) return "keep does not apply with pack: a block spans several documents"
    if (p.pack !== undefined && p.append_eos === false) return "pack puts EOS between documents: remove append_eos: false"
    return true
  }
  if (p.completion === undefined) return "give completion, the column the model learns to write, with prompt or template"
  if (p.pack !== undefined) return "pack applies to text mode only"
  return true
}))

type Params = typeof Params.Type

/** One tokenized row. */
interface Example {
  readonly inputIds: Int32Array
  readonly labels: Int32Array
}

interface Stats {
  rows: number
  tokens: number
  maxLength: number
}

const stageError = (error: TokenizerError) => new StageError({ message: error.message, cause: error })

/** A local tokenizer's files are inputs: editing one re-runs the stage. A hub tokenizer enters by its commit. */
const inputFiles = (params: Params, baseDir: string) =>
  tokenizerSource(params.tokenizer, baseDir).pipe(
    Effect.flatMap((source) =>
      source._tag === "Hub" ? Effect.succeed([]) : tokenizerFiles(source.dir).pipe(Effect.map(fileList))
    ),
    Effect.mapError(stageError)
  )

const externalInputs = (params: Params, baseDir: string) =>
  tokenizerRevision(params.tokenizer, baseDir).pipe(Effect.mapError(stageError))

/** Where a batch sits, for messages: its split and the index of its first row there. */
interface Place {
  readonly split: string
  readonly firstRow: number
}

/** Reads one text per row of a batch: a column's cells, or a template filled from several. */
type TextReader = (batch: RecordBatch, place: Place) => Either.Either<ReadonlyArray<string>, string>

const cellText = (value: unknown): string =>
  typeof value === "string" ? value : typeof value === "object" ? JSON.stringify(toPlain(value)) : String(value)

const readCells = (batch: RecordBatch, column: string, place: Place): Either.Either<Array<string>, string> => {
  const vector = batch.getChild(column)!
  const texts: Array<string> = new Array(batch.numRows)
  for (let i = 0; i < batch.numRows; i++) {
    const value: unknown = vector.get(i)
    if (value === null || value === undefined) return Either.left(`split "${place.split}" row ${place.firstRow + i}: "${column}" is null`)
    texts[i] = cellText(value)
  }
  return Either.right(texts)
}

const columnReader = (column: string): TextReader => (batch, place) => readCells(batch, column, place)

const templateReader = (parts: ReadonlyArray<TemplatePart>): TextReader => (batch, place) =>
  Either.gen(function* () {
    const texts: Array<string> = new Array(batch.numRows).fill("")
    for (const part of parts) {
      if ("literal" in part) {
        for (let i = 0; i < texts.length; i++) texts[i] += part.literal
        continue
      }
      const cells = yield* readCells(batch, part.column, place)
      for (let i = 0; i < texts.length; i++) texts[i] += cells[i]!
    }
    return texts
  })

/** prompt ⧺ completion ⧺ [EOS], with the prompt's labels masked when asked. */
const joinExample = (prompt: Int32Array, completion: Int32Array, eos: number | undefined, maskPrompt: boolean): Example => {
  const inputIds = new Int32Array(prompt.length + completion.length + (eos === undefined ? 0 : 1))
  inputIds.set(prompt)
  inputIds.set(completion, prompt.length)
  if (eos !== undefined) inputIds[inputIds.length - 1] = eos
  if (!maskPrompt) return { inputIds, labels: inputIds }
  const labels = inputIds.slice()
  labels.fill(IGNORE_INDEX, 0, prompt.length)
  return { inputIds, labels }
}

const PLAIN = { addSpecialTokens: false } as const

/**
 * The prompt as the template renders a user turn with the generation prompt, and the
 * rest of the rendered conversation as the reply: the reply's turn end is learned too.
 */
const chatParts = (tokenizer: Tokenizer, prompt: string, completion: string) =>
  Effect.gen(function* () {
    const turns = yield* chatTurns(tokenizer, prompt, completion).pipe(Effect.mapError(stageError))
    if (turns === undefined) {
      return yield* new StageError({
        message: "the chat template does not render the conversation as the prompt (with the generation prompt) followed by the reply, so the reply cannot be told apart: tokenize without chat_template"
      })
    }
    return turns
  })

/** How each row of a batch becomes an example, decided once from the params. */
type Encoder = (batch: RecordBatch, place: Place) => Effect.Effect<ReadonlyArray<Example>, StageError>

/** Token ids of each text, without special tokens: in this thread, or on the worker pool. */
type EncodeTexts = (texts: ReadonlyArray<string>, place: Place) => Effect.Effect<ReadonlyArray<Int32Array>, StageError>

const makeEncoder = (params: Params, tokenizer: Tokenizer, eos: number | undefined, encodeTexts: EncodeTexts): Encoder => {
  const read = (reader: TextReader, batch: RecordBatch, place: Place) =>
    Either.mapLeft(reader(batch, place), (message) => new StageError({ message }))
  if (params.text !== undefined) {
    const texts = columnReader(params.text)
    const nothing = new Int32Array(0)
    return (batch, place) =>
      read(texts, batch, place).pipe(
        Effect.flatMap((documents) => encodeTexts(documents, place)),
        Effect.map((documents) => documents.map((ids) => joinExample(nothing, ids, eos, false)))
      )
  }
  const prompts = params.template !== undefined ? templateReader(Either.getOrThrow(parseTemplate(params.template))) : columnReader(params.prompt!)
  const completions = columnReader(params.completion!)
  return (batch, place) =>
    Effect.gen(function* () {
      const prompt = yield* read(prompts, batch, place)
      const completion = yield* read(completions, batch, place)
      // Prompt and completion of each row, side by side: [p0, c0, p1, c1, …].
      const texts: Array<string> = new Array(2 * prompt.length)
      for (let i = 0; i < prompt.length; i++) {
        const [head, tail] = params.chat_template ? yield* chatParts(tokenizer, prompt[i]!, completion[i]!) : [prompt[i]!, completion[i]!]
        texts[2 * i] = head
        texts[2 * i + 1] = tail
      }
      const ids = yield* encodeTexts(texts, place)
      return Array.from({ length: prompt.length }, (_, i) => joinExample(ids[2 * i]!, ids[2 * i + 1]!, eos, params.mask_prompt))
    })
}

const TOKEN_IDS = int32ListVector([]).type

const outputSchema = (keep: ReadonlyArray<Field>) =>
  new ArrowSchema([
    new Field("input_ids", TOKEN_IDS, false),
    new Field("labels", TOKEN_IDS, false),
    new Field("length", new Int32(), false),
    ...keep
  ])

const exampleBatch = (schema: ArrowSchema, examples: ReadonlyArray<Example>, keep: ReadonlyArray<Data>) => {
  const length = examples.length
  const lengths = makeData({ type: new Int32(), length, nullCount: 0, data: Int32Array.from(examples, (e) => e.inputIds.length) })
  const children = [
    int32ListVector(examples.map((e) => e.inputIds)).data[0]!,
    int32ListVector(examples.map((e) => e.labels)).data[0]!,
    lengths,
    ...keep
  ]
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length, nullCount: 0, children }))
}

const requireColumns = (schema: ArrowSchema, split: string, params: Params) => {
  const fields = new Map(schema.fields.map((f) => [f.name, f]))
  const textColumns = [params.prompt, params.completion, params.text].filter((c): c is string => c !== undefined)
  const templateColumns = params.template === undefined
    ? []
    : Either.getOrThrow(parseTemplate(params.template)).flatMap((part) => ("column" in part ? [part.column] : []))
  const missing = [...new Set([...textColumns, ...templateColumns, ...params.keep])].filter((c) => !fields.has(c))
  if (missing.length > 0) {
    return Effect.fail(new StageError({
      message: `split "${split}" has no column ${missing.map((c) => `"${c}"`).join(", ")} (columns: ${[...fields.keys()].join(", ")})`
    }))
  }
  const notText = textColumns.find((c) => !DataType.isUtf8(fields.get(c)!.type) && !DataType.isLargeUtf8(fields.get(c)!.type))
  if (notText !== undefined) {
    return Effect.fail(new StageError({ message: `column "${notText}" of split "${split}" is ${fields.get(notText)!.type}, not text` }))
  }
  const clash = params.keep.find((c) => ["input_ids", "labels", "length"].includes(c))
  if (clash !== undefined) {
    return Effect.fail(new StageError({ message: `keep: "${clash}" is a column this stage writes; rename it before tokenizing` }))
  }
  return Effect.succeed(params.keep.map((c) => fields.get(c)!))
}

export default defineStage({
  name: "tokenize",
  version: "1",
  description: "Tokenizes text into input_ids, labels (-100 over the prompt) and length, with a Hugging Face tokenizer",
  params: Params,
  accepts: { kinds: ["dataset"], min: 1, max: 1 },
  produces: ["dataset"],
  executionParams: ["workers"],
  inputFiles,
  externalInputs,
  run: Effect.fn("Tokenize.run")(function* (ctx) {
    const params = ctx.params
    const dir = yield* resolveTokenizerDir(params.tokenizer, ctx.baseDir).pipe(Effect.mapError(stageError))
    const input = yield* inputDataset(ctx)
    const total = Object.entries(input.splits)
      .filter(([split]) => params.splits === undefined || params.splits.includes(split))
      .reduce((sum, [, files]) => sum + files.reduce((n, f) => n + f.rows, 0), 0)
    // This thread tokenizes too, beside (cores − 1) workers. They start first, to load
    // their tokenizers while this thread loads its own; from a few batches on they pay.
    const workers = Math.min((params.workers ?? availableParallelism()) - 1, Math.floor(total / params.batch_size) - 1)
    const pool = workers >= 1
      ? yield* tokenizerFiles(dir).pipe(Effect.mapError(stageError), Effect.flatMap((files) => encodePool(files, workers)))
      : undefined
    const tokenizer = yield* loadTokenizer(dir).pipe(Effect.mapError(stageError))
    if (params.chat_template && !tokenizer.hasChatTemplate) {
      return yield* new StageError({ message: `chat_template: ${tokenizer.dir}/tokenizer_config.json has no chat_template` })
    }
    const appendEos = params.append_eos ?? !params.chat_template
    if (appendEos && tokenizer.eosTokenId === undefined) {
      return yield* new StageError({
        message: `${tokenizer.dir}/tokenizer_config.json names no eos_token: set append_eos: false${params.pack ? " (and drop pack)" : ""}`
      })
    }
    const eos = appendEos ? tokenizer.eosTokenId : undefined
    const here = (texts: ReadonlyArray<string>) => Effect.sync(() => texts.map((text) => tokenizer.encode(text, PLAIN)))
    const encodeTexts: EncodeTexts = pool === undefined ? here : (texts, place) =>
      // Every (workers + 1)th batch stays here; the yield lets the others go out first.
      Math.floor(place.firstRow / params.batch_size) % (pool.size + 1) === 0
        ? Effect.zipRight(Effect.yieldNow(), here(texts))
        : Effect.mapError(pool.encode(texts), (e) => new StageError({ message: e.message }))
    if (pool !== undefined) yield* ctx.log(`tokenizing on this thread and ${pool.size} worker${pool.size === 1 ? "" : "s"}`)
    const encode = makeEncoder(params, tokenizer, eos, encodeTexts)
    const metrics: Record<string, number> = {}

    const dataset = yield* streamSplits(ctx, { splits: params.splits, batchRows: params.batch_size }, (input) =>
      Effect.gen(function* () {
        const split = input.name
        const keepFields = yield* requireColumns(input.schema, split, params)
        const schema = outputSchema(keepFields)
        const stats: Stats = { rows: 0, tokens: 0, maxLength: 0 }
        const packer = params.pack === undefined ? undefined : new BlockPacker(params.pack.block_size)
        const blocks = { count: 0 }
        const batches = input.batches.pipe(
          Stream.mapAccum(0, (firstRow, slice) => [firstRow + slice.numRows, { slice, firstRow }] as const),
          // In order, however many are in flight: two per worker keeps each one busy.
          Stream.mapEffect(({ slice, firstRow }) => Effect.map(encode(slice, { split, firstRow }), (examples) => ({ slice, examples })), {
            concurrency: pool === undefined ? 1 : 2 * pool.size
          }),
          // Then one at a time, in order: the packer carries tokens from batch to batch.
          Stream.map(({ slice, examples }) => {
            for (const example of examples) {
              stats.tokens += example.inputIds.length
              stats.maxLength = Math.max(stats.maxLength, example.inputIds.length)
            }
            stats.rows += examples.length
            if (packer === undefined) return exampleBatch(schema, examples, keepFields.map((f) => slice.getChild(f.name)!.data[0]!))
            const packed = packer.push(examples.map((e) => e.inputIds)).map((block) => ({ inputIds: block, labels: block }))
            blocks.count += packed.length
            return exampleBatch(schema, packed, [])
          }),
          Stream.concat(Stream.execute(Effect.suspend(() => {
            metrics[`${split}.rows`] = stats.rows
            metrics[`${split}.tokens`] = stats.tokens
            if (packer === undefined) {
              metrics[`${split}.max_length`] = stats.maxLength
              return ctx.log(
                `${split}: ${stats.rows} rows, ${stats.tokens} tokens (max ${stats.maxLength}, mean ${(stats.tokens / Math.max(1, stats.rows)).toFixed(1)})`
              )
            }
            metrics[`${split}.blocks`] = blocks.count
            return ctx.log(
              `${split}: ${stats.rows} documents, ${stats.tokens} tokens → ${blocks.count} blocks of ${packer.blockSize} (the last ${packer.leftover} tokens dropped)`
            )
          })))
        )
        // Packed blocks are as many record batches of 16,384 rows as before batches streamed.
        return { schema, batches, ...(packer !== undefined && { batchRows: DEFAULT_BATCH_ROWS }) }
      }))
    return { outputs: { dataset }, metrics }
  }, Effect.scoped) // the worker pool stops with the stage
})
