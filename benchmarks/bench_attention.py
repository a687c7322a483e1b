"""Attention forward+backward time and peak memory against T, side by side in one run.

Compares PyTorch's fused softmax SDPA, ``kernel_attention`` (sparsemax, 1.5-entmax,
4/3-entmax, normalised ReLU) and the ``entmax`` package on materialised causal scores,
at batch 1, 4 heads, head dim 64, causal, float32. Every (method, T) runs in its own
subprocess so its peak resident memory (``ru_maxrss``) is its own; the table reports
the process peak and the peak above the process's memory just before the first call
(inputs already allocated), each with its ratio to SDPA's.

    python benchmarks/bench_attention.py                  # T = 1k … 16k, writes docs/
    python benchmarks/bench_attention.py --quick          # T = 1k, 2k in a minute

Timing is the median of ``--repeats`` forward+backward passes after one warm-up pass.
The machine may be shared, so each configuration waits (up to a minute) for the other
processes to go idle before it starts; ratios are the meaningful numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
B, H, E = 1, 4, 64

# name -> (label, kind); kind "ours" takes a kernel_attention method
CONFIGS = {
    "sdpa": "SDPA softmax (PyTorch fused)",
    "ours:sparsemax": "ours sparsemax",
    "ours:entmax15": "ours 1.5-entmax",
    "ours:entmax43": "ours 4/3-entmax",
    "ours:normalized_relu": "ours normalised ReLU",
    "pkg:sparsemax": "entmax pkg sparsemax (materialised)",
    "pkg:entmax15": "entmax pkg entmax15 (materialised)",
    "pkg:bisect43": "entmax pkg entmax_bisect α=4/3 (materialised)",
}


NOTES = """\
Batch 1, 4 heads, head dim 64, causal, float32, forward + backward. *Peak RSS* is the
whole process (Python, torch, inputs included); *peak above inputs* is what the call
itself added. The entmax package runs on the materialised (T × T) scores, only up to
`--entmax-max-len` (its memory grows as T²).

What bounds our time: the seven matmuls (2 forward, 5 backward: the backward recomputes
the scores) cost about what SDPA's whole fused kernel costs; the rest is passes over each
(rows × keys) score block, one eager op each: per block the threshold takes one `amax`
plus 5 passes per Newton sweep for sparsemax and 1.5-entmax (7 and 6 sweeps at
T = 4096) and 7 per Halley sweep for 4/3-entmax (4 sweeps); the backward adds about 6
passes. Gathering the candidates of the support after the first sweep (to iterate on a
few percent of the entries) was measured slower on this CPU than plain sweeps over a
cache-resident block, and was dropped. The machine is shared: each row waits for idle
CPUs before it starts, but single timings can still be inflated; the ratios measured back
to back are the meaningful numbers.
"""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _attention_fn(name: str):
    import math

    import torch
    import torch.nn.functional as F

    if name == "sdpa":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if name.startswith("ours:"):
        from kernelattn.attention import kernel_attention

        method = name.split(":", 1)[1]
        return lambda q, k, v: kernel_attention(q, k, v, is_causal=True, method=method)
    import entmax

    fn = {"pkg:sparsemax": lambda s: entmax.sparsemax(s, dim=-1),
          "pkg:entmax15": lambda s: entmax.entmax15(s, dim=-1),
          "pkg:bisect43": lambda s: entmax.entmax_bisect(s, alpha=4 / 3, dim=-1)}[name]

    def materialised(q, k, v):
        T = q.shape[-2]
        s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)
        return fn(s.masked_fill(causal, float("-inf"))) @ v

    return materialised


def worker(name: str, T: int, repeats: int) -> dict:
    """Run one configuration in this process and return its measurements."""
    import torch

    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, T, E, requires_grad=True) for _ in range(3))
    do = torch.randn(B, H, T, E)
    fn = _attention_fn(name)
    base = _rss_bytes()

    def step():
        for x in (q, k, v):
            x.grad = None
        t0 = time.perf_counter()
        fn(q, k, v).backward(do)
        return time.perf_counter() - t0

    times = [step()]  # warm-up (counted for memory, not for time)
    if repeats > 0:
        times = [step() for _ in range(repeats)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"name": name, "T": T, "time_s": statistics.median(times), "times": times,
            "peak_mib": peak / 2**20, "delta_mib": (peak - base) / 2**20, "threads": torch.get_num_threads()}


def _cpu_busy(interval: float = 1.0) -> float:
    """Fraction of the machine's CPU time that was busy over ``interval`` seconds."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    (t0, i0), _ = read(), time.sleep(interval)
    t1, i1 = read()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def _wait_until_quiet(limit: float = 60.0, threshold: float = 0.2) -> None:
    """The machine may be shared: start a measurement when other processes are idle."""
    start = time.time()
    while time.time() - start < limit and _cpu_busy() > threshold:
        pass


def _run_child(name: str, T: int, repeats: int, timeout: float) -> dict | None:
    _wait_until_quiet()
    cmd = [sys.executable, __file__, "--worker", name, str(T), str(repeats)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        print(f"  {name} T={T}: timed out after {timeout:.0f}s", file=sys.stderr)
        return None
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1:] or ["(no message)"]
        print(f"  {name} T={T}: failed ({tail[0]})", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def _table(results: list[dict], lengths: list[int]) -> str:
    by = {(r["name"], r["T"]): r for r in results}
    lines = ["| T | method | fwd+bwd (ms) | × SDPA | peak RSS (MiB) | × SDPA | peak above inputs (MiB) | × SDPA |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for T in lengths:
        ref = by.get(("sdpa", T))
        for name, label in CONFIGS.items():
            r = by.get((name, T))
            if r is None:
                continue
            rt = f"{r['time_s'] / ref['time_s']:.2f}" if ref else "–"
            rm = f"{r['peak_mib'] / ref['peak_mib']:.2f}" if ref else "–"
            rd = f"{r['delta_mib'] / ref['delta_mib']:.2f}" if ref and ref["delta_mib"] > 0 else "–"
            lines.append(f"| {T} | {label} | {1000 * r['time_s']:.0f} | {rt} | {r['peak_mib']:.0f} | {rm} | "
                         f"{r['delta_mib']:.0f} | {rd} |")
    return "\n".join(lines)


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, label in CONFIGS.items():
        pts = sorted((r["T"], r) for r in results if r["name"] == name)
        if not pts:
            continue
        Ts = [t for t, _ in pts]
        style = "-o" if not name.startswith("pkg:") else "--s"
        ax_t.plot(Ts, [r["time_s"] for _, r in pts], style, label=label)
        ax_m.plot(Ts, [r["delta_mib"] for _, r in pts], style, label=label)
    for ax, ylab in ((ax_t, "forward + backward time (s)"), (ax_m, "peak memory above inputs (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T (batch 1, 4 heads, head dim 64, causal, float32)")
        ax.set_ylabel(ylab)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--repeats", type=int, default=5, help="timed passes per configuration (median reported)")
    p.add_argument("--quick", action="store_true", help="T = 1024, 2048 and 2 repeats")
    p.add_argument("--entmax-max-len", type=int, default=4096,
                   help="largest T for the entmax package on materialised scores (memory grows as T²)")
    p.add_argument("--methods", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--worker", nargs=3, metavar=("NAME", "T", "REPEATS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        name, T, reps = args.worker
        print(json.dumps(worker(name, int(T), int(reps))))
        return
    lengths, repeats = (([1024, 2048], 2) if args.quick else (args.lengths, args.repeats))
    results = []
    for T in lengths:
        for name in args.methods:
            if name.startswith("pkg:"):
                if T > args.entmax_max_len:
                    continue
                reps = repeats if T <= 2048 else 1  # bisection at 4k takes about a minute per pass
            else:
                reps = repeats
            r = _run_child(name, T, reps, timeout=1800)
            if r is not None:
                results.append(r)
                print(f"  T={T:6d} {name:22s} {1000 * r['time_s']:9.0f} ms  peak {r['peak_mib']:7.0f} MiB  "
                      f"(+{r['delta_mib']:.0f})", file=sys.stderr, flush=True)
    table = _table(results, lengths)
    cmd = "python benchmarks/bench_attention.py" + (" --quick" if args.quick else "")
    print(table)
    if not args.no_write:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        md = (f"# Attention benchmark\n\nCommand: `{cmd}` (CPU, {os.cpu_count()} cores, torch threads "
              f"{results[0]['threads'] if results else '?'}; each row a separate process).\n\n{table}\n\n{NOTES}")
        (args.out_dir / "bench_attention.md").write_text(md)
        _plot(results, args.out_dir / "bench_attention.png")
        print(f"\nwrote {args.out_dir / 'bench_attention.md'} and {args.out_dir / 'bench_attention.png'}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
