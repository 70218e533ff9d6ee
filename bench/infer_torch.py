#!/usr/bin/python3
"""PyTorch's side of the inference cases: greedy generation with a KV cache, and eval_loss.

../shared/anchor/bench_torch.py's model (a port of transformers' Qwen2ForCausalLM, fp32, its
seeded init), run the way transformers runs it for inference:

  --mode generate   transformers' greedy `generate` with a DynamicCache: one forward over the
                    (left-padded) prompts, then one token a step, each layer's keys and values
                    grown with torch.cat, position ids from the attention mask, the head only on
                    the last position (as transformers >= 4.45 does), argmax. EOS is ignored, so
                    every row makes exactly --new tokens. The prompts are the benchmark's own
                    (`prompt_ids`, the same formula as bench/cases/generate.ts).
  --mode eval-loss  `trainer.evaluate()`'s forward: the model with labels under torch.no_grad(),
                    logits at every position and the shifted cross-entropy, as bench_torch.py
                    computes it. Random ids, the first --prompt-frac of each row labelled -100.

Prints one JSON line. 1 warm-up run, then the median of --repeats.

    python3 bench/infer_torch.py --mode generate --preset qwen2.5-0.5b-slice --layers 24 --batch 8
    python3 bench/infer_torch.py --mode eval-loss --preset qwen2.5-0.5b-slice --layers 24 --batch 5 --seq 512
"""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench_torch.py does, before torch loads
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "shared", "anchor"))

import argparse, json, math, resource, statistics, time  # noqa: E401,E402
from types import SimpleNamespace  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import bench_torch  # noqa: E402
from bench_torch import repeat_kv, rope_cos_sin, rotate_half  # noqa: E402


def prompt_ids(rows, length, vocab):
    """The benchmark's prompts: row r, position j -> (r * 7919 + j * 104729 + 1) mod vocab."""
    return torch.tensor([[(r * 7919 + j * 104729 + 1) % vocab for j in range(length)] for r in range(rows)])


def attend(attn, x, cos, sin, mask, cache):
    """One attention block with a DynamicCache entry: cache is [keys, values] or None."""
    B, T, _ = x.shape
    q = attn.q_proj(x).view(B, T, attn.n_heads, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(B, T, attn.n_kv, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(x).view(B, T, attn.n_kv, attn.head_dim).transpose(1, 2)
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    if cache[0] is not None:  # DynamicCache.update: torch.cat along the sequence
        k, v = torch.cat([cache[0], k], dim=-2), torch.cat([cache[1], v], dim=-2)
    cache[0], cache[1] = k, v
    groups = attn.n_heads // attn.n_kv
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    scores = q @ k.transpose(2, 3) / math.sqrt(attn.head_dim) + mask
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return attn.o_proj((probs @ v).transpose(1, 2).contiguous().reshape(B, T, -1))


def forward_cached(model, ids, mask2d, caches):
    """Logits [B, V] of the last position; caches (one [k, v] per layer) grow in place."""
    B, T = ids.shape
    S = mask2d.shape[1]  # keys visible: cached + new
    x = model.model.embed_tokens(ids)
    positions = (mask2d.long().cumsum(-1) - 1).masked_fill(mask2d == 0, 1)[:, -T:]  # transformers' rule
    cos, sin = rope_cos_sin(positions, x.shape[-1] // model.cfg.num_attention_heads, model.cfg.rope_theta)
    causal = torch.ones(T, S, dtype=torch.bool).tril(S - T)[None, None]
    allowed = causal & mask2d.bool()[:, None, None, :]
    mask = torch.zeros(allowed.shape, dtype=x.dtype).masked_fill(~allowed, torch.finfo(x.dtype).min)
    for layer, cache in zip(model.model.layers, caches):
        x = x + attend(layer.self_attn, layer.input_layernorm(x), cos, sin, mask, cache)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    head = model.model.embed_tokens.weight if model.lm_head is None else model.lm_head.weight
    return F.linear(model.model.norm(x[:, -1:]), head).float()[:, -1]


def generate(model, prompts, new_tokens):
    B = prompts.shape[0]
    caches = [[None, None] for _ in model.model.layers]
    mask = torch.ones_like(prompts)
    ids, out = prompts, []
    first = None
    for step in range(new_tokens):
        token = forward_cached(model, ids, mask, caches).argmax(-1)  # greedy
        if step == 0:
            first = time.perf_counter()
        out.append(token)
        ids = token[:, None]
        mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype)], dim=1)
    return torch.stack(out, 1), first


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["generate", "eval-loss"], required=True)
    ap.add_argument("--preset", choices=list(bench_torch.PRESETS), default="tiny")
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=64, help="generate: prompt tokens a row")
    ap.add_argument("--new", type=int, default=32, help="generate: new tokens a row")
    ap.add_argument("--seq", type=int, default=512, help="eval-loss: tokens a row")
    ap.add_argument("--prompt-frac", type=float, default=0.4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = SimpleNamespace(**dict(bench_torch.QWEN25_05B, **bench_torch.PRESETS[args.preset]))
    cfg.num_hidden_layers = args.layers or cfg.num_hidden_layers
    torch.manual_seed(0)
    model = bench_torch.Qwen2ForCausalLM(cfg).eval()
    cpu0 = bench_torch.cpu_jiffies()
    times, extra = [], {}
    with torch.no_grad():
        if args.mode == "generate":
            prompts = prompt_ids(args.batch, args.prompt, cfg.vocab_size)
            generate(model, prompts, 2)  # warm-up
            prefill = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                tokens, first = generate(model, prompts, args.new)
                times.append(time.perf_counter() - t0)
                prefill.append(first - t0)
                assert tokens.shape == (args.batch, args.new)
            step = statistics.median(times)
            first_s = statistics.median(prefill)
            extra = dict(batch=args.batch, prompt_tokens=args.prompt, new_tokens=args.new, kv_cache=True,
                         tokens_per_s=round(args.batch * args.new / step, 2),
                         first_token_s=round(first_s, 4),
                         decode_tokens_per_s=round(args.batch * (args.new - 1) / max(1e-9, step - first_s), 2))
        else:
            gen = torch.Generator().manual_seed(0)
            ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=gen)
            labels = ids.clone()
            labels[:, : int(args.seq * args.prompt_frac)] = -100
            batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
            model(**batch)  # warm-up
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                loss = model(**batch)[1].item()
                times.append(time.perf_counter() - t0)
            step = statistics.median(times)
            extra = dict(B=args.batch, T=args.seq, tokens_per_s=round(args.batch * args.seq / step, 2), loss=round(loss, 4))
    busy, total, mine = (b - a for a, b in zip(cpu0, bench_torch.cpu_jiffies()))
    print(json.dumps(dict(
        impl="torch", mode=args.mode, preset=args.preset, layers=cfg.num_hidden_layers,
        median_s=round(step, 4), min_s=round(min(times), 4), max_s=round(max(times), 4), **extra,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        torch=torch.__version__, threads=torch.get_num_threads(),
        others_cpu_frac=round(max(0.0, (busy - mine) / max(1, total)), 3))), flush=True)


if __name__ == "__main__":
    main()
