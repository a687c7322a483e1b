"""Plots: one legend per figure, error bars only with several seeds, a y-range that separates methods."""

import matplotlib.pyplot as plt
import pytest
from matplotlib.container import ErrorbarContainer

from kernelattn.experiments.plots import _percent_axis, _series, plot_all


def _records(seeds, values):
    """mqmtar-like recall records: {method: recall} at lengths 48 and 96, one record per seed."""
    return [{"task": "mqmtar", "method": m, "seed": s, "arch": "memory_mosaics", "metric": "recall", "length": L,
             "value": v - 0.001 * s} for m, v in values.items() for s in seeds for L in (48, 96)]


CROWDED = {"softmax": 0.964, "sparsemax": 0.999, "entmax15": 0.995, "entmax43": 0.996, "relumax": 0.993,
           "topk_softmax": 0.969, "normalized_relu": 0.908, "topk_uniform": 0.008}


def test_one_seed_draws_no_error_bars_and_two_seeds_do():
    for seeds, bars in (([0], 0), ([0, 1], len(CROWDED))):
        fig, ax = plt.subplots()
        _percent_axis(ax, _series(_records(seeds, CROWDED), "mqmtar", "recall", "length"))
        assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == bars
        plt.close(fig)


def test_crowded_recall_gets_a_logit_axis_that_separates_methods():
    fig, ax = plt.subplots()
    unit = _percent_axis(ax, _series(_records([0], CROWDED), "mqmtar", "recall", "length"))
    assert "logit" in unit and ax.get_yscale() == "logit"
    # softmax (96.4 %) and sparsemax (99.9 %) are far apart on the axis: > 20 % of its height
    to_axes = lambda xy: ax.transAxes.inverted().transform(ax.transData.transform(xy))  # noqa: E731
    ys = {ln.get_label(): to_axes(ln.get_xydata()[0])[1] for ln in ax.get_lines()}
    assert ys["sparsemax"] - ys["softmax"] > 0.2
    plt.close(fig)
    fig, ax = plt.subplots()  # all values high: a zoomed linear axis
    _percent_axis(ax, _series(_records([0], {"a": 0.95, "b": 0.97, "c": 0.82}), "mqmtar", "recall", "length"))
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] > 75
    plt.close(fig)


def test_each_figure_has_one_legend_outside_the_panels(tmp_path, monkeypatch):
    recs = _records([0], CROWDED) + [
        {"task": "lm", "method": m, "seed": 0, "arch": "memory_mosaics", "metric": metric, key: x, "value": v}
        for m in ("softmax", "sparsemax") for metric, key in (("loss_by_position", "position"),
                                                              ("val_loss_curve", "step"))
        for x, v in ((16, 3.0), (32, 2.9))]
    figs = []
    real_savefig = plt.Figure.savefig
    monkeypatch.setattr(plt.Figure, "savefig", lambda self, *a, **k: (figs.append(self), real_savefig(self, *a, **k)))
    written = plot_all(recs, tmp_path)
    assert [p.name for p in written] == ["length_generalisation.png", "lm.png"]
    for fig in figs:
        assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    lm_labels = [t.get_text() for t in figs[1].legends[0].get_texts()]
    assert lm_labels == ["softmax", "sparsemax"]
    assert all(p.stat().st_size > 10_000 for p in written)


def test_failing_methods_do_not_flatten_the_working_ones():
    # the cpu preset's MQMTAR at 1024: the working methods at 85-96 %, two failures near 0 %
    values = {"softmax": 0.913, "sparsemax": 0.955, "entmax43": 0.848, "relumax": 0.892,
              "normalized_relu": 0.042, "topk_uniform": 0.0}
    fig, ax = plt.subplots()
    assert "logit" in _percent_axis(ax, _series(_records([0], values), "mqmtar", "recall", "length"))
    plt.close(fig)


def test_icll_at_one_training_size_puts_methods_side_by_side_and_baselines_as_lines(tmp_path):
    recs = [{"task": "icll", "method": m, "seed": 0, "arch": "memory_mosaics", "metric": metric, "train_size": 10000,
             "value": v} for m, v in (("softmax", 0.47), ("sparsemax", 0.46)) for metric in ("tvd", "accuracy")]
    recs += [{"task": "icll", "method": "3gram", "seed": 0, "arch": "none", "metric": metric, "train_size": 10000,
              "value": 0.48} for metric in ("tvd", "accuracy")]
    figs = []
    real_savefig = plt.Figure.savefig
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Figure, "savefig", lambda self, *a, **k: (figs.append(self), real_savefig(self, *a, **k)))
        assert [p.name for p in plot_all(recs, tmp_path)] == ["icll.png"]
    tvd_ax = figs[0].axes[1]
    assert [t.get_text() for t in tvd_ax.get_xticklabels()] == ["softmax", "sparsemax"]
    baseline = [ln for ln in tvd_ax.get_lines() if ln.get_label() == "3gram"]
    assert len(baseline) == 1 and baseline[0].get_ydata()[0] == 0.48
    assert len(figs[0].legends) == 1
