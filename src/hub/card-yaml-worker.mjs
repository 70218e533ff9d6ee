// Parses one dataset card's YAML header in a worker thread (card-yaml.ts starts it, and
// terminates it when the fetch is interrupted), and answers with the data or the
// parser's message. Plain JavaScript: workers start without a TypeScript loader.
import { parentPort, workerData } from "node:worker_threads"
import { parse } from "yaml"

/**
 * As PyYAML's safe_load, which the `datasets` library uses: a key given twice keeps its
 * last value (`yaml`'s check for duplicate keys is also quadratic in their number, which
 * a hostile header would exploit: 70,000 keys took two minutes), and aliases are bounded.
 */
const OPTIONS = { uniqueKeys: false, maxAliasCount: 100 }

try {
  parentPort.postMessage({ value: parse(workerData, OPTIONS) })
} catch (error) {
  parentPort.postMessage({ error: error instanceof Error ? error.message : String(error) })
}
