"""Attention speed and memory against PyTorch's fused softmax, side by side in one run.

Two tables, each measured on random scores (unit-variance q, k) **and** on the scores of
a trained Memory Mosaics model (``benchmarks/trained_scores.py``: its first context
memory, exactly the call the model makes; trained once, cached under ``runs/bench/``):

1. *Training-style calls* — batch 1, 4 heads, head dim 64, causal, float32: forward +
   backward and forward alone for SDPA softmax, ``kernel_attention`` with sparsemax,
   1.5-entmax, 4/3-entmax, ``alpha=1.7`` and a learnable per-head ``alpha`` tensor
   ``[1.2, 1.4, 1.6, 1.8]``, at each ``--lengths`` T; plus the peak memory each adds.
2. *Decoding* — one new query per head against a cache of ``--cache-lengths`` keys:
   SDPA's decode step, ``kernel_attention_step`` over the whole cache, and the same step
   over a :class:`~kernelattn.KernelKVCache` (certified page skipping; pages read shown).

Every configuration runs in its own subprocess (so its peak memory is its own), waiting
for the machine to be idle first; time is the median of ``--repeats`` calls after a
warm-up; ratios to SDPA measured in the same run are the meaningful numbers.

    python benchmarks/bench_attention.py                     # print the tables
    python benchmarks/bench_attention.py --write-docs        # also write docs/bench_attention.{md,png}
    python benchmarks/bench_attention.py --quick             # T = 1k, caches 8k: a smoke run
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
TENSOR_ALPHA = [1.2, 1.4, 1.6, 1.8]

CONFIGS = {
    "sdpa": "SDPA softmax (PyTorch fused)",
    "sparsemax": "sparsemax",
    "entmax15": "1.5-entmax",
    "entmax43": "4/3-entmax",
    "alpha1.7": "alpha=1.7",
    "alpha_tensor": "learnable alpha [1.2,1.4,1.6,1.8]",
}
DECODE = {
    "sdpa": "SDPA decode step",
    "full:entmax15": "kernel_attention_step 1.5-entmax, whole cache",
    "paged:entmax15": "KernelKVCache 1.5-entmax (page skipping)",
    "paged:sparsemax": "KernelKVCache sparsemax (page skipping)",
}
SOURCES = ("random", "trained")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset the process's peak RSS (Linux ``clear_refs`` 5), so a peak measured after a
    warm-up call excludes one-time costs (code pages, allocator arenas)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _inputs(source: str, T: int):
    import torch

    if source == "random":
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(B, H, T, E, generator=g) for _ in range(3))
        return q, k, v, 1.0 / E ** 0.5
    sys.path.insert(0, str(Path(__file__).parent))
    from trained_scores import trained_qkv

    return trained_qkv(T, log=lambda *a: print(*a, file=sys.stderr))


def _call(name: str, scale: float):
    import torch
    import torch.nn.functional as F

    from kernelattn import kernel_attention

    if name == "sdpa":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    if name == "alpha_tensor":
        alpha = torch.tensor(TENSOR_ALPHA, requires_grad=True)
        return lambda q, k, v: kernel_attention(q, k, v, is_causal=True, scale=scale, alpha=alpha)
    if name == "alpha1.7":
        return lambda q, k, v: kernel_attention(q, k, v, is_causal=True, scale=scale, alpha=1.7)
    return lambda q, k, v: kernel_attention(q, k, v, is_causal=True, scale=scale, method=name)


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker_train(source: str, name: str, T: int, repeats: int) -> dict:
    """Forward+backward and forward-only time, and peak memory above the inputs, of one call."""
    import torch

    q, k, v, scale = _inputs(source, T)
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    g = torch.Generator().manual_seed(1)
    do = torch.randn(q.shape[:-1] + (v.shape[-1],), generator=g)
    fn = _call(name, scale)

    def fwd_bwd():
        for x in (q, k, v):
            x.grad = None
        fn(q, k, v).backward(do)

    def fwd():
        with torch.no_grad():
            fn(q, k, v)

    fwd_bwd()  # warm-up: one-time costs (code pages, allocator arenas) before the memory baseline
    for x in (q, k, v):
        x.grad = None
    _reset_peak()
    base = _rss_bytes()
    t_fb = _median_time(fwd_bwd, repeats)
    peak = _peak_bytes()
    t_f = _median_time(fwd, repeats)
    return {"kind": "train", "source": source, "name": name, "T": T, "fwd_bwd_s": t_fb, "fwd_s": t_f,
            "delta_mib": (peak - base) / 2**20, "threads": torch.get_num_threads()}


def _decode_inputs(source: str, L: int):
    import torch

    if source == "random":
        g = torch.Generator().manual_seed(0)
        k, v = torch.randn(B, H, L, E, generator=g), torch.randn(B, H, L, E, generator=g)
        qs = torch.randn(16, B, H, 1, E, generator=g)
        return qs, k, v, 1.0 / E ** 0.5
    q, k, v, scale = _inputs("trained", L)
    # the query of the newest position attends over the whole cache (the model's own call)
    qs = torch.stack([q[:, :, L - 1 - i:L - i] for i in range(16)])
    return qs, k, v, scale


def worker_decode(source: str, name: str, L: int, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F

    from kernelattn import KernelKVCache, kernel_attention_step
    from kernelattn.attention.cache import paged_entmax_step

    qs, k, v, scale = _decode_inputs(source, L)
    pages = []
    if name == "sdpa":
        def step(q):
            return F.scaled_dot_product_attention(q, k, v, scale=scale)
    elif name.startswith("full:"):
        method = name.split(":", 1)[1]

        def step(q):
            return kernel_attention_step(q, k, v, scale=scale, method=method)
    else:
        method = name.split(":", 1)[1]
        alpha = {"entmax15": 1.5, "sparsemax": 2.0}[method]
        cache = KernelKVCache(B, H, E, E, page_size=32, capacity=L)
        cache.append(k, v)

        def step(q):
            res = paged_entmax_step(cache, q[:, :, 0], alpha, scale)
            if res is None:  # what kernel_attention_step(q, cache) does then: read the whole cache
                pages.append(-(-L // 32))
                return kernel_attention_step(q, cache.keys, cache.values, scale=scale, alpha=alpha)
            pages.append(res[2])
            return res[0]

    i = [0]

    def one():
        with torch.no_grad():
            step(qs[i[0] % len(qs)])
        i[0] += 1

    t = _median_time(one, repeats)
    total_pages = -(-L // 32)
    return {"kind": "decode", "source": source, "name": name, "T": L, "step_s": t,
            "pages_read": statistics.median(pages) if pages else None, "pages_total": total_pages,
            "threads": torch.get_num_threads()}


def _cpu_busy(interval: float = 1.0) -> float:
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    (t0, i0), _ = read(), time.sleep(interval)
    t1, i1 = read()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def _wait_until_quiet(limit: float = 30.0, threshold: float = 0.2) -> None:
    start = time.time()
    while time.time() - start < limit and _cpu_busy() > threshold:
        pass


def _run_child(kind: str, source: str, name: str, T: int, repeats: int, timeout: float) -> dict | None:
    _wait_until_quiet()
    cmd = [sys.executable, __file__, "--worker", kind, source, name, str(T), str(repeats)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        print(f"  {kind} {source} {name} T={T}: timed out after {timeout:.0f}s", file=sys.stderr)
        return None
    sys.stderr.write(res.stderr if res.returncode == 0 else "")
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1:] or ["(no message)"]
        print(f"  {kind} {source} {name} T={T}: failed ({tail[0]})", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def _fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def train_table(results: list[dict], lengths: list[int]) -> str:
    by = {(r["source"], r["name"], r["T"]): r for r in results if r["kind"] == "train"}
    lines = ["| scores | T | method | fwd+bwd (ms) | × SDPA | forward (ms) | × SDPA | memory above inputs (MiB) | × SDPA |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for source in SOURCES:
        for T in lengths:
            ref = by.get((source, "sdpa", T))
            for name, label in CONFIGS.items():
                r = by.get((source, name, T))
                if r is None:
                    continue
                rfb = r["fwd_bwd_s"] / ref["fwd_bwd_s"] if ref else None
                rf = r["fwd_s"] / ref["fwd_s"] if ref else None
                rm = r["delta_mib"] / ref["delta_mib"] if ref and ref["delta_mib"] > 0 else None
                lines.append(f"| {source} | {T} | {label} | {1000 * r['fwd_bwd_s']:.0f} | {_fmt_ratio(rfb)} | "
                             f"{1000 * r['fwd_s']:.0f} | {_fmt_ratio(rf)} | {r['delta_mib']:.0f} | {_fmt_ratio(rm)} |")
    return "\n".join(lines)


def decode_table(results: list[dict], cache_lengths: list[int]) -> str:
    by = {(r["source"], r["name"], r["T"]): r for r in results if r["kind"] == "decode"}
    lines = ["| keys | cached positions | step | time (ms) | × SDPA | pages read |",
             "|---|---:|---|---:|---:|---:|"]
    for source in SOURCES:
        for L in cache_lengths:
            ref = by.get((source, "sdpa", L))
            for name, label in DECODE.items():
                r = by.get((source, name, L))
                if r is None:
                    continue
                ratio = r["step_s"] / ref["step_s"] if ref else None
                pages = "–" if r["pages_read"] is None else f"{r['pages_read']:.0f} / {r['pages_total']}"
                lines.append(f"| {source} | {L} | {label} | {1000 * r['step_s']:.2f} | {_fmt_ratio(ratio)} | {pages} |")
    return "\n".join(lines)


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in results if r["kind"] == "train"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, source in zip(axes, SOURCES):
        ref = {r["T"]: r["fwd_bwd_s"] for r in train if r["source"] == source and r["name"] == "sdpa"}
        for name, label in CONFIGS.items():
            pts = sorted((r["T"], r["fwd_bwd_s"] / ref[r["T"]]) for r in train
                         if r["source"] == source and r["name"] == name and r["T"] in ref)
            if pts:
                ax.plot([t for t, _ in pts], [x for _, x in pts], "-o", label=label)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{source} q, k")
        ax.set_xlabel("sequence length T (batch 1, 4 heads, head dim 64, causal, float32)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("forward + backward time ÷ SDPA's")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=120)


NOTES = """\
*Training-style*: batch 1, 4 heads, head dim 64, causal, float32, median of the timed
calls after a warm-up; *memory above inputs* is the peak resident memory of the
forward + backward calls above the memory held before them (own subprocess; measured
after a warm-up call with the peak reset, so one-time costs such as loading code pages
are excluded for every row alike). *Trained* scores are the first
context memory of a Memory Mosaics model (1.5-entmax, 2 layers, 4 heads of dim 64,
trained 150 steps of 8 × 256 bytes on the built-in stories; `benchmarks/trained_scores.py`), with the
model's own scale; the other methods are applied to the same q, k, v.
*Decoding*: one query per head (16 different ones, median), batch 1, 4 heads, head dim
64; the cache is random keys, or the trained model's keys for a story text of that
length; pages of 32 keys.
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=[1024, 4096, 16384],
                   help="comma list of sequence lengths for the training-style table")
    p.add_argument("--cache-lengths", type=lambda s: [int(x) for x in s.split(",")],
                   default=[8192, 65536, 262144], help="comma list of cache lengths for the decoding table")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per configuration (median reported)")
    p.add_argument("--methods", type=lambda s: s.split(","), default=list(CONFIGS),
                   help=f"comma list from {','.join(CONFIGS)}")
    p.add_argument("--sources", type=lambda s: s.split(","), default=list(SOURCES), help="random,trained")
    p.add_argument("--quick", action="store_true", help="T = 1024, caches of 8192, 2 repeats")
    p.add_argument("--threads", type=int, default=2, help="torch threads per measurement")
    p.add_argument("--write-docs", action="store_true", help="write docs/bench_attention.md and .png")
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        kind, source, name, T, reps = args.worker
        fn = worker_train if kind == "train" else worker_decode
        print(json.dumps(fn(source, name, int(T), int(reps))))
        return
    bad = [m for m in args.methods if m not in CONFIGS] + [s for s in args.sources if s not in SOURCES]
    if bad:
        p.error(f"unknown method/source {bad}; methods: {','.join(CONFIGS)}; sources: {','.join(SOURCES)}")
    if args.quick:
        args.lengths, args.cache_lengths, args.repeats = [1024], [8192], 2
    if "trained" in args.sources:
        sys.path.insert(0, str(Path(__file__).parent))
        from trained_scores import CKPT, train_checkpoint

        if not CKPT.exists():
            print(f"training the benchmark's Memory Mosaics model once -> {CKPT}", file=sys.stderr)
            train_checkpoint(CKPT, log=lambda *a: print(*a, file=sys.stderr))
    results = []
    for source in args.sources:
        for T in args.lengths:
            for name in ["sdpa"] + [m for m in args.methods if m != "sdpa"]:
                reps = args.repeats if T < 16384 else max(1, min(args.repeats, 3))
                r = _run_child("train", source, name, T, reps, timeout=1800)
                if r is not None:
                    results.append(r)
                    print(f"  {source:7s} T={T:6d} {name:13s} fwd+bwd {1000 * r['fwd_bwd_s']:8.0f} ms  "
                          f"fwd {1000 * r['fwd_s']:7.0f} ms  +{r['delta_mib']:.0f} MiB", file=sys.stderr, flush=True)
        for L in args.cache_lengths:
            for name in DECODE:
                r = _run_child("decode", source, name, L, max(args.repeats, 10), timeout=1800)
                if r is not None:
                    results.append(r)
                    print(f"  {source:7s} cache={L:7d} {name:16s} {1000 * r['step_s']:8.2f} ms", file=sys.stderr,
                          flush=True)
    threads = results[0]["threads"] if results else "?"
    cmd = "python benchmarks/bench_attention.py" + (" --quick" if args.quick else "")
    md = (f"# Attention benchmark\n\nCommand: `{cmd}` (CPU, {os.cpu_count()} cores, torch threads {threads}; "
          f"each row a separate process).\n\n## Training-style calls\n\n{train_table(results, args.lengths)}\n\n"
          f"## Decoding\n\n{decode_table(results, args.cache_lengths)}\n\n{NOTES}")
    print(md)
    if args.write_docs:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "bench_attention.md").write_text(md)
        (args.out_dir / "bench_attention.json").write_text(json.dumps(results, indent=1))
        _plot(results, args.out_dir / "bench_attention.png")
        print(f"\nwrote {args.out_dir / 'bench_attention.md'}, .json and .png", file=sys.stderr)


if __name__ == "__main__":
    main()
