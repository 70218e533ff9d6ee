/**
 * pipelines/quickstart-dpo.yaml end to end, shrunk with --set (a few problems and pairs,
 * two steps of each training): SFT from scratch, preference pairs, DPO from the SFT
 * model with its reference log-probabilities, and evaluate scoring both.
 */
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { cliAsync, REPO, tempDir } from "./helpers.ts"

const SHRINK = [
  "problems.splits.train=48", "problems.splits.test=8", "train.max_steps=2", "train.batch_size=4",
  "pairs.splits.train=16", "pairs.splits.test=4", "dpo.max_steps=2", "dpo.batch_size=2", "dpo.eval_steps=2",
  "evaluate.limit=2", "evaluate.max_new_tokens=8"
].flatMap((set) => ["--set", set])

describe("pipelines/quickstart-dpo.yaml", () => {
  it("runs SFT, then DPO from the SFT model, and scores both side by side", async () => {
    const cache = tempDir()
    const run = await cliAsync(["run", join(REPO, "pipelines/quickstart-dpo.yaml"), "--cache-dir", cache, ...SHRINK])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toContain("dpo: the reference log-probabilities of 16 train pairs and 4 test pairs")
    expect(run.stderr).toMatch(/dpo: step 2 \(epoch [\d.]+\): eval_loss \d+\.\d+, eval_rewards\/chosen /)
    expect(run.stderr).toMatch(/evaluate: dpo: accuracy \d+\/2 = /)
    expect(run.stderr).toMatch(/evaluate: \S+\/model \(base\): accuracy \d+\/2 = /)
    expect(run.stderr).toMatch(/quickstart-dpo: 6 ran in /)
  }, 600_000)
})
