"""Forward and generation throughput (tokens/s) of a tiny transformers Llama, per attention implementation.

One randomly initialised model; each round switches it to every implementation in turn
(``sdpa``, ``kernelattn_softmax``, ``kernelattn_entmax15``, ...) and times a forward pass
over a batch (prefill, no grad) and a greedy ``generate`` with the KV cache, so machine
load hits all alike; the median over rounds is reported.

    python benchmarks/bench_hf.py                  # print the markdown table
    python benchmarks/bench_hf.py --write-docs     # also write docs/bench_hf.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def build_model(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, intermediate_size=4 * args.hidden, vocab_size=256,
                      max_position_embeddings=args.seq + args.prompt + args.new_tokens)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(args.device).eval()


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impls", default="sdpa,kernelattn_softmax,kernelattn_entmax15")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=1024, help="forward: tokens per sequence")
    ap.add_argument("--prompt", type=int, default=256, help="generate: prompt tokens")
    ap.add_argument("--new-tokens", type=int, default=64, help="generate: tokens generated per sequence")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--write-docs", action="store_true", help="write the table to docs/bench_hf.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    import kernelattn.integrations.hf as kh

    kh.register()
    impls = args.impls.split(",")
    model = build_model(args)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (args.batch, args.seq), generator=g).to(args.device)
    prompt = torch.randint(0, 256, (args.batch, args.prompt), generator=g).to(args.device)
    gen_kw = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=args.new_tokens,
                  min_new_tokens=args.new_tokens, do_sample=False, use_cache=True, pad_token_id=0)
    fwd, gen = {i: [] for i in impls}, {i: [] for i in impls}
    with torch.no_grad():
        for r in range(args.rounds + 1):
            for impl in impls:
                model.set_attn_implementation(impl)
                t_fwd = timed(lambda: model(x, use_cache=False), args.device)
                t_gen = timed(lambda: model.generate(prompt, **gen_kw), args.device)
                if r:  # round 0 warms up
                    fwd[impl].append(args.batch * args.seq / t_fwd)
                    gen[impl].append(args.batch * args.new_tokens / t_gen)

    base_f, base_g = statistics.median(fwd[impls[0]]), statistics.median(gen[impls[0]])
    lines = [f"| attn_implementation | forward tokens/s | × {impls[0]} | generate tokens/s | × {impls[0]} |",
             "|---|---|---|---|---|"]
    for impl in impls:
        f, g_ = statistics.median(fwd[impl]), statistics.median(gen[impl])
        lines.append(f"| {impl} | {f:.0f} | {f / base_f:.2f} | {g_:.1f} | {g_ / base_g:.2f} |")
    setting = (f"Llama hidden={args.hidden} layers={args.layers} heads={args.heads} kv_heads={args.kv_heads}, "
               f"float32 on {args.device} (threads={args.threads}); forward: batch {args.batch} × {args.seq} tokens; "
               f"generate: batch {args.batch}, prompt {args.prompt}, {args.new_tokens} new tokens (greedy, KV cache); "
               f"median of {args.rounds} interleaved rounds; torch {torch.__version__}, "
               f"transformers {transformers.__version__}")
    table = "\n".join(lines)
    print(table)
    print()
    print(setting)
    if args.write_docs:
        cmd = "python benchmarks/bench_hf.py " + " ".join(a for a in sys.argv[1:])
        out = ROOT / "docs" / "bench_hf.md"
        out.write_text(f"# Hugging Face transformers throughput\n\nCommand: `{cmd.strip()}`\n\n{table}\n\n{setting}\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
