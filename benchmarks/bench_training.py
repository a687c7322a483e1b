"""Training throughput (tokens/s) of Memory Mosaics with each method, relative to softmax.

All methods are measured side by side in one run: each round trains one step of every
method in turn (forward, backward, AdamW step), so machine load hits all alike; the
median over rounds is reported.

    python benchmarks/bench_training.py                 # block sizes 512 and 2048
    python benchmarks/bench_training.py --quick         # small smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kernelattn.models import MemoryMosaics, MemoryMosaicsConfig

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
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.block_sizes, args.tokens, args.rounds, args.n_embd = "256", 2048, 2, 64
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    print("| block size | method | tokens/s | × softmax |")
    print("|---|---|---|---|")
    for T in [int(s) for s in args.block_sizes.split(",")]:
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
            print(f"| {T} | {m} | {tps[m]:.0f} | {tps[m] / tps['softmax']:.2f} |", flush=True)
    print(f"\nMemory Mosaics n_layer={args.n_layer} n_head={args.n_head} n_embd={args.n_embd}, {args.tokens} tokens "
          f"per step, float32, median of {args.rounds} interleaved rounds, threads={args.threads}")


if __name__ == "__main__":
    main()
