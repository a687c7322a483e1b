"""Plots of a sweep's records: length generalisation, ICLL, language modelling."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_all"]

_STYLE = {"softmax": ("black", "-"), "sparsemax": ("tab:blue", "-"), "entmax15": ("tab:orange", "-"),
          "entmax43": ("tab:green", "-"), "normalized_relu": ("tab:purple", "--"), "relumax": ("tab:brown", "--"),
          "topk_softmax": ("tab:gray", ":"), "topk_uniform": ("tab:pink", ":"), "2gram": ("tab:olive", "-."),
          "3gram": ("tab:cyan", "-.")}


def _series(records, task, metric, key):
    acc = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["task"] == task and r["metric"] == metric and r.get(key) is not None:
            acc[(r["method"], r.get("arch"))][r[key]].append(r["value"])
    out = {}
    for k, by_x in acc.items():
        xs = sorted(by_x)
        out[k] = (xs, [statistics.mean(by_x[x]) for x in xs],
                  [statistics.stdev(by_x[x]) if len(by_x[x]) > 1 else 0.0 for x in xs])
    return out


def _draw(ax, series, scale=1.0):
    many_arch = len({a for _, a in series if a != "none"}) > 1
    for (method, arch), (xs, ys, sd) in sorted(series.items()):
        color, ls = _STYLE.get(method, (None, "-"))
        label = f"{method} ({arch})" if many_arch and arch != "none" else method
        ax.errorbar(xs, [scale * y for y in ys], yerr=[scale * s for s in sd], color=color,
                    ls="--" if (many_arch and arch == "gpt") else ls, marker="o", ms=3, capsize=2, label=label)


def plot_all(records: list[dict], out: Path) -> list[Path]:
    out = Path(out)
    written = []
    tasks = [t for t in ("copy", "reverse", "sort", "mqmtar") if any(r["task"] == t for r in records)]
    if tasks:
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            metric = "recall" if task == "mqmtar" else "exact_match"
            _draw(ax, _series(records, task, metric, "length"), 100)
            ax.set(xscale="log", title=f"{task}: {metric.replace('_', ' ')}", xlabel="test length", ylabel="%",
                   ylim=(-3, 103))
            lens = sorted({r["length"] for r in records if r["task"] == task and "length" in r})
            ax.set_xticks(lens, [str(x) for x in lens])
            ax.minorticks_off()
        axes[0][0].legend(fontsize=7)
        fig.suptitle("Length generalisation: the first test length is the longest seen in training")
        fig.tight_layout()
        p = out / "length_generalisation.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    if any(r["task"] == "icll" for r in records):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for ax, (metric, label) in zip(axes, (("accuracy", "greedy accuracy (%)"), ("tvd", "TV distance"))):
            _draw(ax, _series(records, "icll", metric, "train_size"), 100 if metric == "accuracy" else 1)
            ax.set(xscale="log", xlabel="training automata", ylabel=label, title=f"ICLL: {label}")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        p = out / "icll.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    if any(r["task"] == "lm" for r in records):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        runs = sorted((out / "runs" / "lm").glob("*/*/seed*/metrics.jsonl"))
        for path in runs:
            arch, method = path.parts[-4], path.parts[-3]
            rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln]
            pts = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
            if pts:
                color, ls = _STYLE.get(method, (None, "-"))
                axes[0].plot(*zip(*pts), color=color, ls=ls, marker="o", ms=3,
                             label=method if "seed0" in str(path) else None)
        axes[0].set(title="LM: validation loss during training", xlabel="step", ylabel="nats / byte")
        _draw(axes[1], _series(records, "lm", "loss_by_position", "position"))
        axes[1].set(title="LM: loss by position in the window", xlabel="position", ylabel="nats / byte")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        p = out / "lm.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written
