"""``kernelattn hopfield-bench``: masked-digit retrieval and multiple-instance learning.

Retrieval (the papers' image-retrieval protocol on scikit-learn's bundled 8×8 digits, no
download): pixels scaled to ``[-1, 1]``; store M random images; query each with its
bottom half set to 0; iterate the plain static update (no projections, identity post)
with each mapping; a query **succeeds** when the cosine of the final state to its own
image exceeds 0.9 and is **exact** when the state equals the image (relative error
< 1e-4). The final weights are also sorted into single-pattern and mixture (metastable)
states by how many patterns keep more than 1% of the weight.

Multiple-instance learning: bags of 10–30 digits (by default), positive when one holds the target
digit; an MLP embeds each digit, :class:`HopfieldPooling` pools the bag with one
learned query, a linear layer classifies. Test accuracy per mapping over seeds.

Structured recall (HFYN's protocol on the same digits): *free recall* walks through M
stored digits from the first one, recalling one per step (the argmax of the final
weights), with a decaying inhibition of what was recalled (softmax, 1.5-entmax,
sparsemax) or with constrained sparsemax; scored by the unique-memory ratio. *Sequential
recall* retrieves the window {current, next} with sequential 2-subsets and cleans it up
with each mapping; scored by the Levenshtein coefficient against the stored order.
*Dense associative memory baselines*: ``tanh(β Xᵀ F(Xq))`` with ``F`` = 5th / 10th
power or ``exp`` on the masked-digit retrieval above, next to softmax and sparsemax.

Writes ``--out`` (default ``runs/hopfield``): ``hopfield_bench.md`` (tables),
``results.json`` and ``hopfield_bench.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .dam import dam_retrieve
from .pooling import HopfieldPooling
from .recall import free_recall, levenshtein_coefficient, sequential_recall
from .mappings import resolve_hopfield_mapping
from .retrieval import hopfield_retrieve

__all__ = ["add_arguments", "run", "retrieval_benchmark", "mil_benchmark", "recall_benchmark", "dam_benchmark",
           "load_digits_tensor"]

DEFAULT_MAPPINGS = ["softmax", "entmax15", "sparsemax", "normmax:2", "normmax:5"]
DEFAULT_MEMORIES = [10, 25, 50, 100, 200, 400, 800]
DEFAULT_MIL_MAPPINGS = ["softmax", "entmax15", "sparsemax", "normmax:2", "ksubsets:2", "entmax15+learn"]
SUPPORT_BUCKETS = ("1", "2", "3-5", "6+")
FREE_RECALL_METHODS = ["softmax", "entmax15", "sparsemax", "constrained sparsemax"]
SEQ_RECALL_MAPPINGS = ["softmax", "entmax15", "sparsemax"]
# exp:0.05 is HFYN's λ for 784+ pixels; exp:0.5 rescales it to the ~10× smaller scores of
# 64-pixel digits (the recall β grid does the same with 0.1 and 1).
DEFAULT_DAM = ["poly:5", "poly:10", "exp:0.05", "exp:0.5"]
DAM_COMPARE = ["softmax", "sparsemax"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``hopfield-bench`` options to ``parser``."""
    parser.add_argument("--out", default="runs/hopfield", help="output directory (default: runs/hopfield)")
    parser.add_argument("--mappings", nargs="+", default=DEFAULT_MAPPINGS,
                        help="retrieval mappings (softmax, sparsemax, entmax15, entmax:<a>, normmax:<a>, "
                             "ksubsets:<k>)")
    parser.add_argument("--memories", nargs="+", type=int, default=DEFAULT_MEMORIES,
                        help="numbers M of stored images (each <= 1797)")
    parser.add_argument("--betas", nargs="+", type=float, default=[0.3, 1.0, 3.0, 10.0],
                        help="inverse temperatures β (softmax nears argmax as β grows)")
    parser.add_argument("--seeds", type=int, default=5, help="random subsets per (M, β)")
    parser.add_argument("--n-iter", type=int, default=20, help="maximum updates per query")
    parser.add_argument("--mask-frac", type=float, default=0.5, help="fraction of image rows zeroed from the bottom")
    parser.add_argument("--no-mil", action="store_true", help="skip the multiple-instance-learning example")
    parser.add_argument("--mil-mappings", nargs="+", default=DEFAULT_MIL_MAPPINGS,
                        help="pooling mappings ('+learn' suffix: learnable α)")
    parser.add_argument("--mil-seeds", type=int, default=5)
    parser.add_argument("--mil-bags", type=int, default=200, help="training bags (as many test bags)")
    parser.add_argument("--mil-bag-size", nargs=2, type=int, default=[10, 30], metavar=("MIN", "MAX"),
                        help="bag sizes are drawn uniformly from MIN..MAX")
    parser.add_argument("--mil-epochs", type=int, default=30)
    parser.add_argument("--mil-target", type=int, default=9, help="the digit that makes a bag positive")
    parser.add_argument("--no-recall", action="store_true", help="skip free/sequential recall and the DAM baselines")
    parser.add_argument("--recall-memories", nargs="+", type=int, default=[8, 16, 32, 64],
                        help="numbers M of stored digits in the recall tasks")
    parser.add_argument("--recall-betas", nargs="+", type=float, default=[0.1, 1.0],
                        help="β of the inhibited / structured recall steps (HFYN: 0.1 on 784+ pixels)")
    parser.add_argument("--recall-seeds", type=int, default=3)
    parser.add_argument("--recall-n-iter", type=int, default=20, help="clean-up updates per recall step")
    parser.add_argument("--dam", nargs="+", default=DEFAULT_DAM,
                        help="DAM separation functions (poly:<n>, exp:<λ>; exp uses --dam-inner-beta)")
    parser.add_argument("--dam-beta", type=float, default=0.1, help="gain of the DAM tanh (HFYN: 0.1)")
    parser.add_argument("--dam-inner-beta", type=float, default=0.05, help="λ of a plain 'exp' DAM (HFYN: 0.05)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the work is many small ops, which extra "
                             "threads slow down on a busy machine)")


def load_digits_tensor() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits as ``(1797, 64)`` float32 in ``[-1, 1]`` and labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - exercised only without scikit-learn
        raise RuntimeError("hopfield-bench needs scikit-learn (pip install scikit-learn)") from err
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 8.0 - 1.0
    return x, torch.tensor(d.target)


def _mask_bottom(x: torch.Tensor, frac: float) -> torch.Tensor:
    q = x.clone().view(-1, 8, 8)
    rows = int(round(frac * 8))
    if rows:
        q[:, 8 - rows:, :] = 0.0
    return q.view(-1, 64)


def _bucket(n: int) -> str:
    return "1" if n <= 1 else "2" if n == 2 else "3-5" if n <= 5 else "6+"


def retrieval_benchmark(mappings, memories, betas, seeds, n_iter=20, mask_frac=0.5, progress=True) -> list[dict]:
    """One row per (β, M, seed, mapping) with success, exact and single rates and support counts."""
    from tqdm import tqdm

    x, _ = load_digits_tensor()
    maps = [resolve_hopfield_mapping(m) for m in mappings]
    rows = []
    jobs = [(b, m, s) for b in betas for m in memories for s in range(seeds)]
    for beta, M, seed in tqdm(jobs, desc="retrieval", disable=not progress):
        g = torch.Generator().manual_seed(1000 * seed + M)
        mem = x[torch.randperm(x.shape[0], generator=g)[:M]]
        queries = _mask_bottom(mem, mask_frac)
        for hm in maps:
            r = hopfield_retrieve(mem, queries, hm, beta=beta, n_iter=n_iter, tol=1e-6, return_info=True)
            cos = F.cosine_similarity(r.states, mem, dim=-1)
            exact = (r.states - mem).norm(dim=-1) <= 1e-4 * mem.norm(dim=-1)
            support = (r.weights > 0.01).sum(-1)
            buckets = {b: 0 for b in SUPPORT_BUCKETS}
            for n in support.tolist():
                buckets[_bucket(n)] += 1
            rows.append({"beta": beta, "M": M, "seed": seed, "mapping": hm.name,
                         "success": float((cos > 0.9).float().mean()), "exact": float(exact.float().mean()),
                         "single": float((r.weights.amax(-1) >= 0.99).float().mean()),
                         "support": buckets, "n_iter": r.n_iter})
    return rows


# ------------------------------------------------------------------------------------ MIL


def _make_bags(x, y, n_bags, target, g, sizes=(5, 12)):
    """Balanced bags of ``sizes[0]``–``sizes[1]`` images; positives hold 1–2 images of ``target``."""
    pos_idx = (y == target).nonzero().flatten()
    neg_idx = (y != target).nonzero().flatten()
    bags, labels = [], []
    for i in range(n_bags):
        size = int(torch.randint(sizes[0], sizes[1] + 1, (1,), generator=g))
        positive = i % 2 == 0
        n_pos = min(size, int(torch.randint(1, 3, (1,), generator=g))) if positive else 0
        idx = torch.cat([pos_idx[torch.randint(len(pos_idx), (n_pos,), generator=g)],
                         neg_idx[torch.randint(len(neg_idx), (size - n_pos,), generator=g)]])
        bags.append(x[idx[torch.randperm(size, generator=g)]])
        labels.append(float(positive))
    return bags, torch.tensor(labels)


def _pad(bags):
    n = max(b.shape[0] for b in bags)
    out = torch.zeros(len(bags), n, bags[0].shape[1])
    pad = torch.ones(len(bags), n, dtype=torch.bool)
    for i, b in enumerate(bags):
        out[i, :b.shape[0]] = b
        pad[i, :b.shape[0]] = False
    return out, pad


class _MILNet(nn.Module):
    def __init__(self, mapping: str, learn_alpha: bool, scaling: float | None = None):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
        self.pool = HopfieldPooling(32, quantity=1, hidden_size=16, mapping=mapping, alpha_learnable=learn_alpha,
                                    scaling=scaling)
        self.head = nn.Linear(self.pool.output_size, 1)

    def forward(self, bags, pad):
        pooled, w = self.pool(self.embed(bags), stored_pattern_padding_mask=pad, return_weights=True)
        return self.head(pooled).squeeze(-1), w


def mil_benchmark(mappings, seeds=3, n_bags=300, epochs=30, target=9, sizes=(5, 12), progress=True) -> list[dict]:
    """Train a HopfieldPooling bag classifier per (mapping, seed); test accuracy and attention support."""
    from tqdm import tqdm

    x, y = load_digits_tensor()
    rows = []
    jobs = [(m, s) for m in mappings for s in range(seeds)]
    for name, seed in tqdm(jobs, desc="mil", disable=not progress):
        learn = name.endswith("+learn")
        mapping = name[: -len("+learn")] if learn else name
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(x.shape[0], generator=g)
        half = x.shape[0] // 2
        tr, te = perm[:half], perm[half:]  # disjoint images for train and test bags
        train = _make_bags(x[tr], y[tr], n_bags, target, g, sizes)
        test = _make_bags(x[te], y[te], n_bags, target, g, sizes)
        torch.manual_seed(seed)
        net = _MILNet(mapping, learn)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        bags, labels = train
        for _ in range(epochs):
            order = torch.randperm(len(bags), generator=g)
            for start in range(0, len(bags), 16):
                sel = order[start:start + 16]
                xb, pad = _pad([bags[i] for i in sel])
                logits, _ = net(xb, pad)
                loss = F.binary_cross_entropy_with_logits(logits, labels[sel])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            xb, pad = _pad(test[0])
            logits, w = net(xb, pad)
            acc = float(((logits > 0).float() == test[1]).float().mean())
            support = float((w > 0.01).sum(-1).float().mean())
        alpha = net.pool.hopfield.association.alpha
        rows.append({"mapping": name, "seed": seed, "test_acc": acc, "support": support,
                     "alpha": float(alpha.detach().mean()) if isinstance(alpha, torch.Tensor) else alpha})
    return rows


# ------------------------------------------------------------------------- recall + DAM


def _subset(x: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    """The M digits of a seed (the retrieval benchmark draws the same ones)."""
    g = torch.Generator().manual_seed(1000 * seed + m)
    return x[torch.randperm(x.shape[0], generator=g)[:m]]


def recall_benchmark(memories, betas, seeds, n_iter=20, progress=True) -> tuple[list[dict], list[dict]]:
    """Free recall (unique-memory ratio) and sequential recall (Levenshtein coefficient) rows."""
    from tqdm import tqdm

    x, _ = load_digits_tensor()
    x = x.double()  # the inhibition scale γ = 1e9 needs the mantissa
    free_rows, seq_rows = [], []
    jobs = [(b, m, s) for b in betas for m in memories for s in range(seeds)]
    for beta, m, seed in tqdm(jobs, desc="recall", disable=not progress):
        mem = _subset(x, m, seed)
        for name in FREE_RECALL_METHODS:
            if name == "constrained sparsemax":
                order = free_recall(mem, method="constrained", beta=beta, n_iter=n_iter)
            else:
                order = free_recall(mem, name, beta=beta, n_iter=n_iter)
            free_rows.append({"beta": beta, "M": m, "seed": seed, "method": name, "unique": len(set(order)) / m})
        for name in SEQ_RECALL_MAPPINGS:
            order = sequential_recall(mem, name, beta=beta, n_iter=n_iter)
            seq_rows.append({"beta": beta, "M": m, "seed": seed, "method": name,
                             "levenshtein": levenshtein_coefficient(order, list(range(1, m)))})
    return free_rows, seq_rows


def dam_benchmark(kinds, memories, seeds, beta=0.1, inner_beta=0.05, mask_frac=0.5, compare=DAM_COMPARE,
                  compare_beta=1.0, n_iter=20, progress=True) -> list[dict]:
    """Masked-digit success rate of the DAM baselines (5 updates, as HFYN) and of HFY mappings."""
    from tqdm import tqdm

    x, _ = load_digits_tensor()
    rows = []
    for m, seed in tqdm([(m, s) for m in memories for s in range(seeds)], desc="dam", disable=not progress):
        mem = _subset(x, m, seed)
        queries = _mask_bottom(mem, mask_frac)
        states = {f"DAM {k}": dam_retrieve(mem, queries, k, beta=beta, inner_beta=inner_beta, n_iter=5) for k in kinds}
        for name in compare:
            states[f"{name} (β = {compare_beta:g})"] = hopfield_retrieve(mem, queries, name, beta=compare_beta,
                                                                        n_iter=n_iter, tol=1e-6)
        for name, st in states.items():
            cos = F.cosine_similarity(st, mem, dim=-1)
            rows.append({"M": m, "seed": seed, "method": name, "success": float((cos > 0.9).float().mean())})
    return rows


# ------------------------------------------------------------------------------- reporting


def _mean_std(v):
    m = sum(v) / len(v)
    s = math.sqrt(sum((a - m) ** 2 for a in v) / max(1, len(v) - 1))
    return m, s


def _retrieval_tables(rows, mappings, memories, betas, seeds, n_iter, mask_frac) -> str:
    out = []
    for beta in betas:
        out.append(f"**Retrieval, β = {beta:g}** — success % (cosine > 0.9) / exact %, mean over {seeds} seeds, "
                   f"bottom {mask_frac:.0%} of each image masked, ≤ {n_iter} updates\n")
        out.append("| mapping | " + " | ".join(f"M={m}" for m in memories) + " |")
        out.append("|---|" + "---|" * len(memories))
        for name in mappings:
            cells = []
            for m in memories:
                sel = [r for r in rows if r["beta"] == beta and r["M"] == m and r["mapping"] == name]
                cells.append(f"{100 * _mean_std([r['success'] for r in sel])[0]:.0f} / "
                             f"{100 * _mean_std([r['exact'] for r in sel])[0]:.0f}")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
        out.append(f"**Final states, β = {beta:g}** — % of all queries (every M and seed) by number of patterns "
                   "holding > 1% of the weight (1 = a single pattern, more = a metastable mixture)\n")
        out.append("| mapping | " + " | ".join(SUPPORT_BUCKETS) + " |")
        out.append("|---|" + "---|" * len(SUPPORT_BUCKETS))
        for name in mappings:
            sel = [r for r in rows if r["beta"] == beta and r["mapping"] == name]
            tot = sum(sum(r["support"].values()) for r in sel)
            cells = [f"{100 * sum(r['support'][b] for r in sel) / tot:.1f}" for b in SUPPORT_BUCKETS]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _mil_table(rows, mappings, seeds, n_bags, epochs, target, sizes) -> str:
    out = [f"**Multiple-instance learning** — bags of {sizes[0]}–{sizes[1]} digits, positive if one is a {target}; "
           f"{n_bags} training / {n_bags} test bags, {epochs} epochs, {seeds} seeds\n",
           "| pooling mapping | test accuracy % | instances with > 1% weight | final α |", "|---|---|---|---|"]
    for name in mappings:
        sel = [r for r in rows if r["mapping"] == name]
        m, s = _mean_std([100 * r["test_acc"] for r in sel])
        sup = _mean_std([r["support"] for r in sel])[0]
        alphas = [r["alpha"] for r in sel if r["alpha"] is not None]
        a = f"{sum(alphas) / len(alphas):.2f}" if alphas else "—"
        out.append(f"| {name} | {m:.1f} ± {s:.1f} | {sup:.1f} | {a} |")
    out.append("")
    return "\n".join(out)


def _recall_tables(free_rows, seq_rows, memories, betas, seeds, n_iter) -> str:
    out = []
    for beta in betas:
        out.append(f"**Free recall, β = {beta:g}** — unique-memory ratio % (distinct digits recalled in M steps "
                   f"/ M), "
                   f"mean ± std over {seeds} seeds, {n_iter} clean-up updates per step\n")
        out.append("| method | " + " | ".join(f"M={m}" for m in memories) + " |")
        out.append("|---|" + "---|" * len(memories))
        for name in FREE_RECALL_METHODS:
            cells = []
            for m in memories:
                mu, sd = _mean_std([100 * r["unique"] for r in free_rows
                                    if r["beta"] == beta and r["M"] == m and r["method"] == name])
                cells.append(f"{mu:.0f} ± {sd:.0f}")
            label = name if name == "constrained sparsemax" else f"{name} + inhibition"
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
    for beta in betas:
        out.append(f"**Sequential recall, β = {beta:g}** — Levenshtein coefficient % of the recalled order against "
                   f"the stored one (100 = exact), mean ± std over {seeds} seeds\n")
        out.append("| method | " + " | ".join(f"M={m}" for m in memories) + " |")
        out.append("|---|" + "---|" * len(memories))
        for name in SEQ_RECALL_MAPPINGS:
            cells = []
            for m in memories:
                mu, sd = _mean_std([100 * r["levenshtein"] for r in seq_rows
                                    if r["beta"] == beta and r["M"] == m and r["method"] == name])
                cells.append(f"{mu:.0f} ± {sd:.0f}")
            out.append(f"| seq. 2-subsets + {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _dam_table(rows, memories, seeds, beta, mask_frac) -> str:
    names = list(dict.fromkeys(r["method"] for r in rows))
    out = [f"**Dense associative memory baselines** — masked-digit retrieval success % (cosine > 0.9), bottom "
           f"{mask_frac:.0%} masked, mean over {seeds} seeds; DAM: `tanh({beta:g} · Xᵀ F(Xq))`, 5 updates, "
           f"`poly:n` F(s) = sⁿ, `exp:λ` F(s) = exp(λs)\n",
           "| method | " + " | ".join(f"M={m}" for m in memories) + " |", "|---|" + "---|" * len(memories)]
    for name in names:
        cells = [f"{100 * _mean_std([r['success'] for r in rows if r['M'] == m and r['method'] == name])[0]:.0f}"
                 for m in memories]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("")
    return "\n".join(out)


def _plot(rows, mappings, memories, betas, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(betas), figsize=(4.2 * len(betas), 7.6), squeeze=False, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, beta in enumerate(betas):
        for j, (key, title) in enumerate((("success", "success (cosine > 0.9)"), ("exact", "exact retrieval"))):
            ax = axes[j][i]
            for c, name in enumerate(mappings):
                ms, ss = [], []
                for m in memories:
                    sel = [100 * r[key] for r in rows if r["beta"] == beta and r["M"] == m and r["mapping"] == name]
                    mu, sd = _mean_std(sel)
                    ms.append(mu)
                    ss.append(sd)
                col = "black" if name == "softmax" else colors[c % len(colors)]
                ls = "--" if name == "softmax" else "-"
                ax.plot(memories, ms, ls, marker="o", ms=4, color=col, label=name, lw=2 if name == "softmax" else 1.5)
                ax.fill_between(memories, [a - b for a, b in zip(ms, ss)], [a + b for a, b in zip(ms, ss)],
                                color=col, alpha=0.10)
            ax.set_xscale("log")
            ax.set_xticks(memories)
            ax.set_xticklabels([str(m) for m in memories], fontsize=8)
            ax.minorticks_off()
            ax.set_ylim(-3, 103)
            ax.set_xlabel("stored images M")
            if i == 0:
                ax.set_ylabel(f"{title}\n% of queries")
            ax.set_title(f"β = {beta:g}")
            ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower left", fontsize=9)
    fig.suptitle("Masked-digit retrieval (sklearn digits, bottom half zeroed)", y=1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments; returns an exit code (2 on bad input)."""
    import sys

    try:
        for name in list(args.mappings) + [m.replace("+learn", "") for m in args.mil_mappings]:
            resolve_hopfield_mapping(name)
        if any(m < 2 or m > 1797 for m in args.memories):
            raise ValueError("--memories must be between 2 and 1797 (the digits set size)")
        if args.seeds < 1 or args.n_iter < 1 or args.mil_seeds < 1 or args.mil_epochs < 1 or args.mil_bags < 2:
            raise ValueError("--seeds, --n-iter, --mil-seeds, --mil-epochs must be >= 1 and --mil-bags >= 2")
        if not 0 <= args.mask_frac <= 1 or any(b <= 0 for b in args.betas):
            raise ValueError("--mask-frac must be in [0, 1] and --betas > 0")
        if not 1 <= args.mil_bag_size[0] <= args.mil_bag_size[1] or not 0 <= args.mil_target <= 9:
            raise ValueError("--mil-bag-size needs 1 <= MIN <= MAX and --mil-target a digit 0..9")
        if args.threads < 1:
            raise ValueError("--threads must be >= 1")
        if any(m < 2 or m > 1797 for m in args.recall_memories) or args.recall_seeds < 1 or args.recall_n_iter < 1:
            raise ValueError("--recall-memories must be between 2 and 1797, --recall-seeds and --recall-n-iter >= 1")
        if any(b <= 0 for b in args.recall_betas) or args.dam_beta <= 0:
            raise ValueError("--recall-betas and --dam-beta must be > 0")
        for kind in args.dam:
            dam_retrieve(torch.zeros(1, 1), torch.zeros(1, 1), kind)  # raises on an unknown kind
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mappings = [resolve_hopfield_mapping(m).name for m in args.mappings]
    memories = sorted(set(args.memories))
    t0 = time.time()
    rows = retrieval_benchmark(mappings, memories, args.betas, args.seeds, args.n_iter, args.mask_frac)
    text = _retrieval_tables(rows, mappings, memories, args.betas, args.seeds, args.n_iter, args.mask_frac)
    result = {"retrieval": rows, "config": {k: v for k, v in vars(args).items() if not callable(v)}}
    if not args.no_mil:
        sizes = tuple(args.mil_bag_size)
        mil = mil_benchmark(args.mil_mappings, args.mil_seeds, args.mil_bags, args.mil_epochs, args.mil_target,
                            sizes)
        text += "\n" + _mil_table(mil, args.mil_mappings, args.mil_seeds, args.mil_bags, args.mil_epochs,
                                  args.mil_target, sizes)
        result["mil"] = mil
    if not args.no_recall:
        rmem = sorted(set(args.recall_memories))
        free_rows, seq_rows = recall_benchmark(rmem, args.recall_betas, args.recall_seeds, args.recall_n_iter)
        dam = dam_benchmark(args.dam, memories, args.seeds, args.dam_beta, args.dam_inner_beta, args.mask_frac,
                            n_iter=args.n_iter)
        text += "\n" + _recall_tables(free_rows, seq_rows, rmem, args.recall_betas, args.recall_seeds,
                                      args.recall_n_iter)
        text += "\n" + _dam_table(dam, memories, args.seeds, args.dam_beta, args.mask_frac)
        result.update(free_recall=free_rows, sequential_recall=seq_rows, dam=dam)
    result["seconds"] = round(time.time() - t0, 1)
    _plot(rows, mappings, memories, args.betas, out / "hopfield_bench.png")
    (out / "hopfield_bench.md").write_text(text)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(text)
    print(f"wrote {out / 'hopfield_bench.md'}, {out / 'results.json'}, {out / 'hopfield_bench.png'} "
          f"in {result['seconds']} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m kernelattn.hopfield.bench``."""
    parser = argparse.ArgumentParser(prog="kernelattn hopfield-bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
