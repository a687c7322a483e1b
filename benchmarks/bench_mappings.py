"""Row-wise forward+backward time of our mappings vs the `entmax` package, side by side.

For each row length n, a batch of random float32 score rows is pushed through each
mapping (forward, then backward of a random upstream gradient); the median over
``--repeats`` runs is reported with the ratio peer/ours (> 1 means we are faster).

"At the same accuracy": for general α, ``entmax_bisect`` runs with the fewest bisection
iterations whose max error against a float64 solution is no worse than ours (its
default, 50 iterations, is also shown).

    python benchmarks/bench_mappings.py                 # rows of 1k..16k entries; prints the table
    python benchmarks/bench_mappings.py --quick         # smaller, for a smoke run
    python benchmarks/bench_mappings.py --write-docs    # also rewrite docs/bench_mappings.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import entmax as entmax_pkg
import torch

import kernelattn as ka

DOCS = Path(__file__).resolve().parents[1] / "docs"


def time_pair(fa, fb, x, grad, repeats: int) -> tuple[float, float]:
    """Median forward+backward seconds of fa and fb, runs interleaved so load hits both alike."""
    ta, tb = [], []
    for i in range(repeats + 1):
        for fn, acc in ((fa, ta), (fb, tb)):
            xx = x.detach().requires_grad_()
            t0 = time.perf_counter()
            fn(xx).backward(grad)
            if i:  # first round is warm-up
                acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def max_err(fn, x, ref) -> float:
    with torch.no_grad():
        return (fn(x).double() - ref).abs().max().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="1024,2048,4096,8192,16384")
    ap.add_argument("--elements", type=int, default=2 ** 21, help="rows x length per batch (default 2M)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="lengths 1024,4096, 2 repeats")
    ap.add_argument("--write-docs", action="store_true",
                    help=f"also write the table to {DOCS / 'bench_mappings.md'} (default: print only)")
    args = ap.parse_args()
    try:
        lengths = [int(s) for s in args.lengths.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--lengths must be comma-separated integers, got {args.lengths!r}")
    if args.quick:
        args.lengths, args.repeats = "1024,4096", 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lines = ["| n | mapping | ours (ms) | entmax pkg (ms) | peer / ours | our max err | peer max err | peer setting |",
             "|---|---|---|---|---|---|---|---|"]
    print(lines[0]); print(lines[1])
    for n in lengths:
        rows = max(1, args.elements // n)
        x = torch.randn(rows, n) * 2
        grad = torch.randn(rows, n)
        cases = [
            ("sparsemax", lambda t: ka.sparsemax(t), lambda t: entmax_pkg.sparsemax(t, -1), 2.0, "sort"),
            ("1.5-entmax", lambda t: ka.entmax15(t), lambda t: entmax_pkg.entmax15(t, -1), 1.5, "sort"),
        ]
        for a in (4 / 3, 1.25, 1.75):
            ours = (lambda a: lambda t: ka.entmax(t, a))(a)
            ref = ka.entmax(x.double(), a)
            e_ours = max_err(ours, x, ref)
            chosen = 50
            for it in (12, 16, 20, 24, 28, 32, 40):
                if max_err(lambda t: entmax_pkg.entmax_bisect(t, a, n_iter=it), x, ref) <= e_ours:
                    chosen = it
                    break
            cases.append((f"{a:.4g}-entmax", ours, (lambda a, it: lambda t: entmax_pkg.entmax_bisect(t, a, n_iter=it))(a, chosen),
                          a, f"bisect n_iter={chosen} (matched)"))
            if chosen != 50:
                cases.append((f"{a:.4g}-entmax", ours, (lambda a: lambda t: entmax_pkg.entmax_bisect(t, a))(a), a,
                              "bisect n_iter=50 (default)"))
        for name, ours, peer, a, setting in cases:
            ref = ka.entmax(x.double(), a)
            t_ours, t_peer = time_pair(ours, peer, x, grad, args.repeats)
            line = (f"| {n} | {name} | {t_ours * 1e3:.1f} | {t_peer * 1e3:.1f} | {t_peer / t_ours:.2f}x | "
                    f"{max_err(ours, x, ref):.1e} | {max_err(peer, x, ref):.1e} | {setting} |")
            print(line, flush=True)
            lines.append(line)
    footer = (f"float32, {args.elements} scores per batch (rows x n), forward + backward, median of "
              f"{args.repeats}, torch threads={args.threads}, torch {torch.__version__}")
    print("\n" + footer)
    if args.write_docs:
        command = " ".join(["python benchmarks/bench_mappings.py", *[a for a in sys.argv[1:] if a != "--write-docs"]])
        path = DOCS / "bench_mappings.md"
        path.write_text("# Mapping benchmark\n\nCommand: `" + command + "`\n\n" + "\n".join(lines) + "\n\n" + footer
                        + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
