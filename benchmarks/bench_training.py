"""Training throughput (tokens/s) of Memory Mosaics with each method, relative to softmax.

All methods are measured side by side in one run: each round trains one step of every
method in turn (forward, backward, AdamW step), so machine load hits all alike; the
median over rounds is reported.

    python benchmarks/bench_training.py                 # block sizes 512 and 2048; prints the table
    python benchmarks/bench_training.py --quick         # small smoke run
    python benchmarks/bench_training.py --write-docs    # also rewrite docs/bench_training.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from kernelattn.models import MemoryMosaics, MemoryMosaicsConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"
METHODS = ["softmax", "sparsemax", "entmax15", "entmax43", "normalized_relu", "relumax", "topk_softmax",
           "topk_uniform"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--block-sizes", default="512,2048")
    ap.add_argument("--tokens", type=int, default=8192, help="tokens per step (batch = tokens / block size)")
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=8)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="block size 256, 2048 tokens, 2 rounds, width 64")
    ap.add_argument("--write-docs", action="store_true",
                    help=f"also write the table to {DOCS / 'bench_training.md'} (default: print only)")
    args = ap.parse_args()
    if args.quick:
        args.block_sizes, args.tokens, args.rounds, args.n_embd = "256", 2048, 2, 64
    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "softmax" not in methods:
        ap.error(f"--methods must include softmax (the reference of the ratio), got {args.methods!r}")
    try:
        block_sizes = [int(s) for s in args.block_sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--block-sizes must be comma-separated integers, got {args.block_sizes!r}")
    lines = ["| block size | method | tokens/s | × softmax |", "|---|---|---|---|"]
    print(lines[0])
    print(lines[1])
    for T in block_sizes:
        B = max(1, args.tokens // T)
        models, opts = {}, {}
        for m in methods:
            torch.manual_seed(0)
            models[m] = MemoryMosaics(MemoryMosaicsConfig(vocab_size=256, n_layer=args.n_layer, n_head=args.n_head,
                                                          n_embd=args.n_embd, block_size=T, method=m, topk=32))
            opts[m] = torch.optim.AdamW(models[m].parameters(), lr=1e-4)
        x = torch.randint(0, 256, (B, T + 1))
        times = {m: [] for m in methods}
        for r in range(args.rounds + 1):
            for m in methods:
                t0 = time.perf_counter()
                _, loss = models[m](x[:, :-1], x[:, 1:])
                loss.backward()
                opts[m].step()
                opts[m].zero_grad(set_to_none=True)
                if r:  # round 0 warms up
                    times[m].append(time.perf_counter() - t0)
        tps = {m: B * T / statistics.median(times[m]) for m in methods}
        for m in methods:
            lines.append(f"| {T} | {m} | {tps[m]:.0f} | {tps[m] / tps['softmax']:.2f} |")
            print(lines[-1], flush=True)
    footer = (f"Memory Mosaics n_layer={args.n_layer} n_head={args.n_head} n_embd={args.n_embd}, {args.tokens} tokens "
              f"per step, float32, median of {args.rounds} interleaved rounds, threads={args.threads}")
    print("\n" + footer)
    if args.write_docs:
        command = " ".join(["python benchmarks/bench_training.py", *[a for a in sys.argv[1:] if a != "--write-docs"]])
        path = DOCS / "bench_training.md"
        path.write_text("# Training throughput benchmark\n\nCommand: `" + command + "`\n\n" + "\n".join(lines)
                        + "\n\n" + footer + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
