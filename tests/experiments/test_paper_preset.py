"""The ``paper`` preset: the paper's scripts' hyper-parameters and model choices, end to end."""

import dataclasses

import pytest

from kernelattn.experiments.presets import ALL_METHODS, DEFAULT_METHODS, PRESETS, TaskPlan
from kernelattn.experiments.reproduce import RunSpec, execute_run
from kernelattn.mappings import resolve_mapping


def test_paper_preset_uses_the_papers_choices():
    from kernelattn.experiments.presets import ALL_METHODS, DEFAULT_METHODS, PRESETS

    p = PRESETS["paper"]
    assert p.topk == 16
    assert "normalized_relu_paper" in p.methods and "normalized_relu" not in p.methods
    assert p.model["init"] == p.model["parametrization"] == "paper"
    assert p.model["dropout"] == p.model["attn_dropout"] == 0.05 and p.model["embd_dropout"] == 0.0
    assert (p.model["n_embd"], p.model["pmem_size"]) == (512, 2688)
    copy = p.tasks["copy"]
    assert (copy.lr, copy.min_lr, copy.warmup_steps, copy.steps, copy.weight_decay, copy.batch_size) == \
        (1e-3, 5e-5, 40000, 156250, 0.1, 256)
    lm = p.tasks["lm"]
    assert (lm.lr, lm.min_lr, lm.warmup_steps, lm.steps, lm.batch_size, lm.grad_accum, lm.seq_len) == \
        (5e-3, 1e-4, 2000, 80000, 512, 32, 512)
    icll = p.tasks["icll"]
    assert (icll.lr, icll.weight_decay, icll.model["n_embd"], icll.model["pmem_size"]) == (1e-4, 0.01, 128, 448)
    assert PRESETS["quick"].methods == DEFAULT_METHODS and set(p.methods) <= set(ALL_METHODS)
    for m in p.methods:
        resolve_mapping(m, topk=p.topk)


@pytest.mark.parametrize("arch", ["memory_mosaics", "gpt"])
def test_a_shrunken_paper_preset_runs_end_to_end(tmp_path, arch):
    """The paper's model choices reach the trained model (GPT takes the shared ones only)."""
    p = PRESETS["paper"]
    small = dataclasses.replace(p, model={**p.model, "n_embd": 16, "n_head": 2, "pmem_size": 20}, tasks={
        "copy": TaskPlan(options=dict(train_min=2, train_max=4, test_lengths=(4, 8), n_eval=8), steps=2,
                         batch_size=4, grad_accum=2, eval_interval=2)})
    recs = execute_run(RunSpec("copy", "normalized_relu_paper", 0, arch), small, str(tmp_path))
    assert {r["length"] for r in recs if "length" in r} == {4, 8}
    cfg = next(tmp_path.rglob("config.json")).read_text()
    for needle in ('"method": "normalized_relu_paper"', '"topk": 16', '"dropout": 0.05', '"grad_accum": 2'):
        assert needle in cfg
    assert ('"parametrization": "paper"' in cfg) == (arch == "memory_mosaics")
