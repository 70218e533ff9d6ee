#!/usr/bin/python3
"""The PyTorch side of the end-to-end benchmark (bench/run.ts --cases e2e).

Trains ../shared/anchor/bench_torch.py's Qwen2ForCausalLM port (a compact copy of
transformers' Qwen2, imported from the anchor, not copied) on the examples the pipeline
produced, in the order our trainer visits them, the way the Hugging Face Trainer does it:
micro-batches padded to their longest row, full [tokens x vocab] logits, each micro-batch's
loss divided by the label tokens of the whole update, clip_grad_norm_, AdamW with no decay on
biases and norms, cosine schedule with warmup. Prints one JSON line.

    /usr/bin/python3 bench/e2e_torch.py --data examples.json --preset small
"""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the anchor sets it, before torch loads
ANCHOR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "shared", "anchor")
sys.path.insert(0, os.environ.get("BENCH_ANCHOR_DIR", ANCHOR))

import argparse, json, math, resource, time  # noqa: E401,E402
from types import SimpleNamespace  # noqa: E402

import bench_torch as anchor  # noqa: E402
import torch  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="JSON: {examples: [{input_ids, labels}], pad_token_id}, in visiting order")
    ap.add_argument("--preset", default="small", choices=list(anchor.PRESETS))
    ap.add_argument("--batch-size", type=int, default=5)
    ap.add_argument("--accumulation", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with open(args.data) as fh:
        data = json.load(fh)
    examples, pad = data["examples"], data["pad_token_id"]
    cfg = SimpleNamespace(**dict(anchor.QWEN25_05B, **anchor.PRESETS[args.preset]))
    torch.manual_seed(0)
    model = anchor.Qwen2ForCausalLM(cfg).train()
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "norm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "norm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    micro = [examples[i:i + args.batch_size] for i in range(0, len(examples), args.batch_size)]
    updates = [micro[i:i + args.accumulation] for i in range(0, len(micro), args.accumulation)]
    total = len(updates)
    warmup = math.ceil(total * args.warmup_ratio)

    def lr_lambda(step):  # transformers' get_cosine_schedule_with_warmup
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)

    def collate(rows):  # DataCollatorForSeq2Seq: right padding, labels -100
        length = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), length), pad, dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return ids, mask, labels

    tokens, losses = 0, []
    started = time.perf_counter()
    for update in updates:
        batches = [collate(rows) for rows in update]
        items = sum(int((labels[:, 1:] != -100).sum()) for _, _, labels in batches)
        total_loss = 0.0
        for ids, mask, labels in batches:
            count = int((labels[:, 1:] != -100).sum())
            loss = model(input_ids=ids, attention_mask=mask, labels=labels)[1] * count / max(1, items)
            loss.backward()
            total_loss += loss.item()
            tokens += int(mask.sum())
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total_loss)
    seconds = time.perf_counter() - started
    print(json.dumps(dict(
        impl="torch", preset=args.preset, examples=len(examples), updates=total, tokens=tokens,
        seconds=round(seconds, 2), tokens_per_s=round(tokens / seconds, 1), last_loss=round(losses[-1], 4),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), torch=torch.__version__)), flush=True)


if __name__ == "__main__":
    main()
