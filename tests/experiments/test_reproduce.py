"""A tiny sweep end to end: files written, records well-formed, finished runs skipped."""

import json

import pytest

from kernelattn.cli import main
from kernelattn.experiments.presets import Preset, TaskPlan
from kernelattn.experiments.reproduce import reproduce

TINY = Preset(name="tiny", model=dict(n_layer=1, n_head=2, n_embd=16), topk=2, default_tasks=("copy",), tasks={
    "copy": TaskPlan(options=dict(train_min=2, train_max=4, test_lengths=(4, 8), n_eval=8), steps=6, batch_size=8,
                     eval_interval=3),
    "icll": TaskPlan(options=dict(n_val=4, n_test=6), seq_len=64, steps=4, batch_size=4, train_sizes=(5, 20),
                     eval_interval=4),
    "lm": TaskPlan(options=dict(n_stories=40, n_eval=4), seq_len=32, steps=4, batch_size=4, eval_interval=2),
})


def test_tiny_sweep_writes_results_table_and_plots(tmp_path, capsys):
    out = tmp_path / "sweep"
    recs = reproduce(TINY, tasks=["copy"], methods=["softmax", "sparsemax"], seeds=[0, 1], out=str(out), jobs=1)
    printed = capsys.readouterr().out
    assert "| method | copy exact @4 | copy exact @8 |" in printed and "| sparsemax |" in printed  # the summary
    assert f"plots:  {out / 'length_generalisation.png'}" in printed and str(out / "results.md") in printed
    saved = json.loads((out / "results.json").read_text())
    data = saved["records"]
    assert data == recs
    prov = saved["provenance"]
    assert prov["version"] and prov["preset"] == "tiny" and prov["preset_config"]["tasks"]["copy"]["steps"] == 6
    assert prov["sweep"]["seeds"] == [0, 1] and prov["sweep"]["methods"] == ["softmax", "sparsemax"]
    assert prov["runs_trained"] == prov["runs_total"] == 4 and prov["wall_seconds"] > 0
    assert "git_commit" in prov  # a commit in a checkout, None in an installed copy
    assert sum(prov["run_code"].values()) == 4 and all(k.startswith(prov["version"] + "@") for k in prov["run_code"])
    for r in data:
        assert {"task", "method", "seed", "metric", "value"} <= r.keys()
    em = [r for r in data if r["metric"] == "exact_match"]
    assert {(r["method"], r["seed"], r["length"]) for r in em} == {
        (m, s, L) for m in ("softmax", "sparsemax") for s in (0, 1) for L in (4, 8)}
    md = (out / "results.md").read_text()
    assert "| softmax |" in md and "| sparsemax |" in md and "±" in md
    assert "CPU-minutes" not in md and "wall-clock training times add up to" in md and "Produced by kernelattn" in md
    assert (out / "length_generalisation.png").stat().st_size > 5000
    # a second call finds every run finished and trains nothing
    capsys.readouterr()
    reproduce(TINY, tasks=["copy"], methods=["softmax", "sparsemax"], seeds=[0, 1], out=str(out), jobs=1)
    assert "4 runs (4 already finished)" in capsys.readouterr().out
    # the docs are a function of results.json alone: `kernelattn report` rebuilds the same table elsewhere
    again = tmp_path / "again"
    assert main(["report", str(out / "results.json"), "--out", str(again)]) == 0
    assert (again / "results.md").read_text() == (out / "results.md").read_text()
    assert (again / "length_generalisation.png").stat().st_size > 5000


def test_icll_and_lm_records_and_baselines(tmp_path):
    out = tmp_path / "s"
    data = reproduce(TINY, tasks=["icll", "lm"], methods=["entmax15"], seeds=[0], out=str(out), jobs=1)
    icll = [r for r in data if r["task"] == "icll"]
    assert {r["method"] for r in icll} == {"entmax15", "2gram", "3gram"}
    assert {r["train_size"] for r in icll if r["metric"] == "accuracy"} == {5, 20}
    lm = {r["metric"] for r in data if r["task"] == "lm"}
    assert {"val_loss", "loss_by_position", "val_loss_curve"} <= lm
    curve = [r["step"] for r in data if r["metric"] == "val_loss_curve"]
    assert curve == [2, 4]  # eval_interval=2, 4 steps
    assert (out / "icll.png").exists() and (out / "lm.png").exists()


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    from kernelattn.experiments.reproduce import RunSpec, execute_run
    out = tmp_path / "r"
    spec = RunSpec("copy", "softmax", 0)
    full = execute_run(spec, TINY, str(tmp_path / "full"))
    folder = spec.folder(out)
    # an interruption after step 3 leaves a checkpoint and no result; the next call resumes
    assert execute_run(spec, TINY, str(out), stop_at=3) is None
    assert (folder / "ckpt.pt").exists() and not (folder / "result.json").exists()
    resumed = execute_run(spec, TINY, str(out))
    pick = lambda rs: [(r["metric"], r.get("length"), r["value"]) for r in rs if r["metric"] != "train_seconds"]
    assert pick(full) == pick(resumed)


def test_report_refuses_a_file_that_is_not_a_results_json(capsys, tmp_path):
    (tmp_path / "results.json").write_text("[1, 2]")
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a results.json written by `kernelattn reproduce`" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_cli_rejects_bad_arguments(capsys, tmp_path):
    assert main(["reproduce", "--tasks", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(["reproduce", "--methods", "softmax,bogus", "--out", str(tmp_path)]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["reproduce", "--preset", "huge", "--out", str(tmp_path)]) == 2
    assert main(["reproduce", "--seeds", "a,b", "--out", str(tmp_path)]) == 2


def test_a_sweep_run_folder_resumes_with_train_resume(tmp_path):
    """A run's saved config names its task, so `kernelattn train --resume` rebuilds the same data."""
    from kernelattn.experiments.reproduce import RunSpec, execute_run
    spec = RunSpec("copy", "sparsemax", 0)
    execute_run(spec, TINY, str(tmp_path / "full"))
    assert execute_run(spec, TINY, str(tmp_path / "cut"), stop_at=3) is None
    assert main(["train", "--resume", str(spec.folder(tmp_path / "cut"))]) == 0
    log = lambda out: (spec.folder(out) / "metrics.jsonl").read_text()  # noqa: E731
    losses = lambda out: [(r["step"], r["train_loss"]) for r in map(json.loads, log(out).splitlines())]  # noqa: E731
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")


def test_cpu_preset_is_the_comparison_the_issue_asks_for(capsys, tmp_path):
    """Three seeds, ICLL at >= 3 training sizes, MQMTAR tested >= 16x beyond training, reverse; 120 runs."""
    from kernelattn.experiments.presets import PRESETS
    from kernelattn.experiments.reproduce import plan_runs

    cpu = PRESETS["cpu"]
    assert cpu.seeds == (0, 1, 2) and set(cpu.default_tasks) == {"reverse", "mqmtar", "icll"}
    assert len(cpu.tasks["icll"].train_sizes) >= 3
    mq = cpu.tasks["mqmtar"].options
    assert max(mq["test_lengths"]) >= 16 * mq["train_max"]
    runs = plan_runs(cpu, cpu.default_tasks, cpu.methods, cpu.seeds, ["memory_mosaics"])
    assert len(runs) == 8 * 3 * (1 + 1 + 3)
    assert main(["reproduce", "--preset", "cpu", "--tasks", "lm", "--out", str(tmp_path / "x")]) == 2
    assert "the cpu preset runs reverse, mqmtar, icll" in capsys.readouterr().err
