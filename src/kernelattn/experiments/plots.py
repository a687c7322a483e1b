"""Plots of a sweep's records: length generalisation, ICLL, language modelling.

One legend per figure (outside the panels), error bars only where a point has more than
one seed (mean ± std), and a logit y-axis for a percentage panel whose values crowd near
100 % (MQMTAR recall: 96 % and 99.9 % are far apart in errors, close on a linear axis).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator  # noqa: E402

__all__ = ["plot_all"]

_STYLE = {"softmax": ("black", "-"), "sparsemax": ("tab:blue", "-"), "entmax15": ("tab:orange", "-"),
          "entmax43": ("tab:green", "-"), "normalized_relu": ("tab:purple", "--"), "relumax": ("tab:brown", "--"),
          "topk_softmax": ("tab:gray", ":"), "topk_uniform": ("tab:pink", ":"),
          "normalized_relu_paper": ("tab:red", "--"), "2gram": ("tab:olive", "-."),
          "3gram": ("tab:cyan", "-.")}
_ORDER = list(_STYLE)


def _series(records, task, metric, key):
    """{(method, arch): (xs, means, stds, counts)} over seeds."""
    acc = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["task"] == task and r["metric"] == metric and r.get(key) is not None:
            acc[(r["method"], r.get("arch"))][r[key]].append(r["value"])
    out = {}
    for k, by_x in acc.items():
        xs = sorted(by_x)
        out[k] = (xs, [statistics.mean(by_x[x]) for x in xs],
                  [statistics.stdev(by_x[x]) if len(by_x[x]) > 1 else 0.0 for x in xs],
                  [len(by_x[x]) for x in xs])
    return out


def _sorted_keys(series):
    return sorted(series, key=lambda ma: (_ORDER.index(ma[0]) if ma[0] in _ORDER else 99, ma[0], ma[1] or ""))


def _draw(ax, series, scale=1.0):
    """One line per (method, arch); error bars (± std over seeds) only where a point has several seeds."""
    many_arch = len({a for _, a in series if a != "none"}) > 1
    for key in _sorted_keys(series):
        (method, arch), (xs, ys, sd, ns) = key, series[key]
        color, ls = _STYLE.get(method, (None, "-"))
        label = f"{method} ({arch})" if many_arch and arch != "none" else method
        ls = "--" if (many_arch and arch == "gpt") else ls
        yy = [scale * y for y in ys]
        if max(ns) > 1:
            ax.errorbar(xs, yy, yerr=[scale * s for s in sd], color=color, ls=ls, marker="o", ms=3, capsize=2,
                        label=label)
        else:
            ax.plot(xs, yy, color=color, ls=ls, marker="o", ms=3, label=label)


def _by_method(ax, series, scale: float) -> None:
    """One point per model (± std over seeds where there are several); baselines as horizontal lines."""
    keys = [k for k in _sorted_keys(series) if k[1] != "none"]
    for i, key in enumerate(keys):
        _, ys, sd, ns = series[key]
        color, _ = _STYLE.get(key[0], (None, "-"))
        ax.errorbar([i], [scale * ys[0]], yerr=[scale * sd[0]] if ns[0] > 1 else None, color=color, marker="o",
                    ms=5, capsize=2, ls="none", label=key[0])
    for key in _sorted_keys(series):
        if key[1] == "none":  # the n-gram baselines: no model, one value per test set
            color, ls = _STYLE.get(key[0], (None, "-."))
            ax.axhline(scale * series[key][1][0], color=color, ls=ls, lw=1, label=key[0])
    ax.set_xticks(range(len(keys)), [k[0] for k in keys], rotation=45, ha="right", fontsize=8)


def _percent_axis(ax, series) -> str:
    """Draw fractions as percentages on a y-range that separates the methods; returns the axis unit.

    All values >= 50 %: a linear axis zoomed to them. At least half the values >= 50 % and
    all of those >= 80 %, the rest far below (methods that fail): a logit axis, which
    spreads 85 % from 96 % from 99.9 % and still shows the failures. Otherwise linear 0-100.
    """
    vals = sorted(y for (_, ys, _, _) in series.values() for y in ys)
    if vals and vals[0] >= 0.5:
        _draw(ax, series, 100.0)
        span = max(100 * (vals[-1] - vals[0]), 2.0)
        ax.set_ylim(max(0.0, 100 * vals[0] - 0.1 * span), min(100.5, 100 * vals[-1] + 0.1 * span))
        return "%"
    working = [v for v in vals if v >= 0.5]
    if vals and 2 * len(working) >= len(vals) and working[0] >= 0.8:
        lo, hi = 0.003, 0.9995  # exact 0 % and 100 % have no place on a logit axis: drawn at its edges
        clipped = {k: (xs, [min(max(y, lo), hi) for y in ys], sd, ns) for k, (xs, ys, sd, ns) in series.items()}
        _draw(ax, clipped, 1.0)
        ax.set_yscale("logit", nonpositive="clip")
        ticks = [0.01, 0.1, 0.5, 0.9, 0.99, 0.999]
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_yticklabels([f"{100 * t:g}" for t in ticks])
        ax.set_ylim(lo * 0.8, 1 - (1 - hi) * 0.8)
        return "% (logit scale)"
    _draw(ax, series, 100.0)
    ax.set_ylim(-3, 103)
    return "%"


def _figure_legend(fig, axes) -> None:
    """One legend for the whole figure, right of the panels, each label once."""
    seen = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside right center", fontsize=8, frameon=False)


def _seeds_note(records) -> str:
    seeds = sorted({r["seed"] for r in records if "seed" in r})
    return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}" + (": mean ± std" if len(seeds) > 1 else "")


def plot_all(records: list[dict], out: Path) -> list[Path]:
    """Write ``length_generalisation.png``, ``icll.png`` and ``lm.png`` (those whose tasks are present)."""
    out = Path(out)
    written = []
    note = _seeds_note(records)
    tasks = [t for t in ("copy", "reverse", "sort", "mqmtar") if any(r["task"] == t for r in records)]
    if tasks:
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks) + 1.8, 3.8), squeeze=False,
                                 layout="constrained")
        for ax, task in zip(axes[0], tasks):
            metric = "recall" if task == "mqmtar" else "exact_match"
            ylabel = f"{metric.replace('_', ' ')}, " + _percent_axis(ax, _series(records, task, metric, "length"))
            ax.set(xscale="log", title=f"{task}: {metric.replace('_', ' ')}", xlabel="test length", ylabel=ylabel)
            lens = sorted({r["length"] for r in records if r["task"] == task and "length" in r})
            ax.set_xticks(lens, [str(x) for x in lens])
            ax.xaxis.set_minor_locator(NullLocator())
        _figure_legend(fig, axes[0])
        fig.suptitle(f"Length generalisation ({note}); the first test length is the longest seen in training",
                     fontsize=10)
        p = out / "length_generalisation.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    if any(r["task"] == "icll" for r in records):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
        acc = _series(records, "icll", "accuracy", "train_size")
        tvd = _series(records, "icll", "tvd", "train_size")
        sizes = sorted({x for xs, _, _, _ in acc.values() for x in xs})
        if len(sizes) == 1:  # one training size: the methods side by side, the baselines as lines
            _by_method(axes[0], acc, 100.0)
            _by_method(axes[1], tvd, 1.0)
            axes[0].set(ylabel="greedy accuracy, %")
            for ax, title in zip(axes, ("ICLL: greedy accuracy", "ICLL: total-variation distance")):
                ax.set_title(f"{title} ({sizes[0]} training automata)", fontsize=9)
        else:
            axes[0].set(ylabel="greedy accuracy, " + _percent_axis(axes[0], acc))
            _draw(axes[1], tvd)
            for ax, title in zip(axes, ("ICLL: greedy accuracy", "ICLL: total-variation distance")):
                ax.set(xscale="log", xlabel="training automata", title=title)
        axes[1].set(ylabel="TV distance (lower is better)")
        _figure_legend(fig, axes)
        fig.suptitle(f"In-context language learning ({note})", fontsize=10)
        p = out / "icll.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    if any(r["task"] == "lm" for r in records):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
        curve = _series(records, "lm", "val_loss_curve", "step")
        if curve:
            _draw(axes[0], curve)
        else:  # records from before val_loss_curve was recorded: read the runs' logs if they are there
            runs = sorted((out / "runs" / "lm").glob("*/*/seed*/metrics.jsonl"))
            for path in runs:
                method = path.parts[-3]
                rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln]
                pts = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
                if pts:
                    color, ls = _STYLE.get(method, (None, "-"))
                    axes[0].plot(*zip(*pts), color=color, ls=ls, marker="o", ms=3, label=method)
            if not runs:
                axes[0].text(0.5, 0.5, "no val_loss_curve records or runs/lm logs", ha="center", va="center",
                             transform=axes[0].transAxes)
        axes[0].set(title="LM: validation loss during training", xlabel="step", ylabel="nats / byte")
        _draw(axes[1], _series(records, "lm", "loss_by_position", "position"))
        axes[1].set(title="LM: loss by position in the window", xlabel="position", ylabel="nats / byte")
        _figure_legend(fig, axes)
        fig.suptitle(f"Language modelling on the built-in stories ({note})", fontsize=10)
        p = out / "lm.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written
