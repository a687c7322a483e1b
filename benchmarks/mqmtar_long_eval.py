"""Forward-only MQMTAR evaluation of a tiny Memory Mosaics at long test lengths.

Shows that scoring at 8k–64k tokens fits a small CPU machine: the task scores one or
two sequences per forward pass (``eval_tokens``), the model runs under
``torch.no_grad()``, and attention never materialises a (T × T) matrix (softmax goes
to PyTorch's fused SDPA, α-entmax and normalised ReLU to the support-restricted path,
the top-k and ReLU-max mappings to the blocked path, all linear in T in memory).
The model is untrained: the numbers are time and memory, not accuracy.

    python benchmarks/mqmtar_long_eval.py --method sparsemax --lengths 16384 65536

prints one line per length with the wall time, the sequence length in tokens and the
process's peak resident memory so far (``getrusage``).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from kernelattn.models import build_model
from kernelattn.tasks import MQMTARTask


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="softmax")
    ap.add_argument("--lengths", type=int, nargs="+", default=[16384, 65536])
    ap.add_argument("--n-eval", type=int, default=2, help="sequences per length")
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = MQMTARTask(alphabet=256, dictionary_size=10_000, test_lengths=args.lengths, n_eval=args.n_eval)
    model = build_model("memory_mosaics", vocab_size=task.vocab_size, n_layer=args.n_layer, n_head=args.n_head,
                        n_embd=args.n_embd, block_size=task.total_length(max(args.lengths)), method=args.method,
                        topk=16).eval()
    print(f"method={args.method} params={sum(p.numel() for p in model.parameters())} "
          f"baseline_peak_rss={peak_rss_mib():.0f}MiB", flush=True)
    for L in args.lengths:
        x, y = task.eval_set(L)
        t0 = time.perf_counter()
        m = task.score(model, x, y, "cpu")
        dt = time.perf_counter() - t0
        print(f"method={args.method} length={L} tokens={x.shape[1]} n={len(x)} batch={task.eval_batch_for(x.shape[1])} "
              f"seconds={dt:.1f} peak_rss={peak_rss_mib():.0f}MiB recall={m['recall']:.3f}", flush=True)


if __name__ == "__main__":
    main()
