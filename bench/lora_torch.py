#!/usr/bin/python3
"""The PyTorch anchor's training step with LoRA adapters, as PEFT builds them.

../shared/anchor/bench_torch.py's model and protocol (random ids, the first 40% of each row
labelled -100, AdamW lr 1e-4 without decay, clipping at 1.0, 2 warm-up steps, then the median),
with PEFT's LoraLayer on every targeted nn.Linear: result = base(x) + lora_B(lora_A(dropout(x)))
* lora_alpha / r, lora_A kaiming-uniform(a=sqrt(5)), lora_B zeros. The base model is frozen
(requires_grad False), so autograd computes only what the adapters need, as it does under PEFT.
Prints bench_torch.py's JSON line, with "mode": "lora" and the adapter's size.

    python3 bench/lora_torch.py --preset qwen2.5-0.5b-slice --layers 24 --r 16 --alpha 32
"""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench_torch.py does, before torch loads
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "shared", "anchor"))

import argparse, json, math  # noqa: E401,E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

import bench_torch  # noqa: E402

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraLinear(nn.Module):
    """PEFT's lora.Linear forward for one adapter, without merging."""

    def __init__(self, base, r, alpha, dropout):
        super().__init__()
        self.base, self.scaling = base, alpha / r
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling


def add_lora(model, r, alpha, dropout, targets=ALL_LINEAR):
    for p in model.parameters():
        p.requires_grad_(False)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and name in targets:
                setattr(module, name, LoraLinear(child, r, alpha, dropout))
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(bench_torch.PRESETS), default="tiny")
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--prompt-frac", type=float, default=0.4)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--dropout", type=float, default=0.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    build = bench_torch.Qwen2ForCausalLM

    def lora_model(cfg):  # bench() builds the model through this name
        torch.manual_seed(0)
        model = add_lora(build(cfg), args.r, args.alpha, args.dropout)
        return model

    bench_torch.Qwen2ForCausalLM = lora_model
    original_adamw = torch.optim.AdamW
    # bench() hands AdamW every parameter; PEFT's users hand it the trainable ones.
    torch.optim.AdamW = lambda params, **kw: original_adamw([p for p in params if p.requires_grad], **kw)
    row = bench_torch.bench(args)
    torch.optim.AdamW = original_adamw
    row["mode"] = "lora"
    row["lora"] = dict(r=args.r, alpha=args.alpha, dropout=args.dropout, targets=list(ALL_LINEAR))
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
