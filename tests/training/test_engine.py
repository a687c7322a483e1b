"""Training engine: exact resume, torchrun data parallel equivalence, config errors."""

import json
import os
import subprocess
import sys

import pytest
import torch

from kernelattn.cli import main
from kernelattn.training import ConfigError, Trainer, load_config, save_checkpoint, load_checkpoint

TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=32", "data.seq_len=32",
        "data.n_stories=60", "optim.batch_size=4", "optim.warmup_steps=2", "run.eval_interval=4",
        "run.eval_batches=1", "run.log_interval=1", "run.progress=false"]


def _losses(out_dir):
    return {r["step"]: r["train_loss"] for r in map(json.loads, open(out_dir / "metrics.jsonl"))}


@pytest.mark.parametrize("method", ["sparsemax", "softmax"])
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, method):
    common = TINY + [f"model.method={method}", "optim.max_steps=8", "run.ckpt_interval=4", "model.dropout=0.1"]
    full = Trainer(load_config(None, common + [f"run.out_dir={tmp_path / 'a'}"])).train()
    # stop after step 4 (a checkpoint is left, as at a crash), then resume in a fresh Trainer
    Trainer(load_config(None, common + [f"run.out_dir={tmp_path / 'b'}"])).train(stop_at=4)
    assert load_checkpoint(tmp_path / "b" / "ckpt.pt")["step"] == 4
    resumed = Trainer(load_config(None, common + [f"run.out_dir={tmp_path / 'b'}"])).train(resume=True)
    assert resumed["step"] == full["step"] == 8
    assert resumed["train_loss"] == full["train_loss"]  # bitwise: same data, RNG, optimiser state
    assert resumed["val_loss"] == full["val_loss"]
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    a = Trainer(load_config(None, TINY + ["optim.max_steps=3", f"run.out_dir={tmp_path / 'a'}"])).train()
    b = Trainer(load_config(None, TINY + ["optim.max_steps=3", "optim.grad_accum=2",
                                          f"run.out_dir={tmp_path / 'b'}"])).train()
    la, lb = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    for k in la:
        assert lb[k] == pytest.approx(la[k], abs=1e-5)


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"step": 2, "bad": Boom()})
    assert load_checkpoint(path)["step"] == 1  # the old checkpoint survives a failed write
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_torchrun_two_processes_match_one(tmp_path):
    args = TINY + ["optim.max_steps=3", "model.method=entmax15", "run.threads=1"]
    single = Trainer(load_config(None, args + [f"run.out_dir={tmp_path / 'one'}"])).train()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "MASTER_", "LOCAL_"))}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kernelattn",
           "train", *args, f"run.out_dir={tmp_path / 'two'}"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert one.keys() == two.keys()
    for k in one:
        assert two[k] == pytest.approx(one[k], abs=1e-5), (k, one[k], two[k])


@pytest.mark.parametrize("override, field", [
    ("model.method=nope", "model.method"), ("model.n_embd=17", "model.n_embd"),
    ("data.source=text", "data.path"), ("data.seq_len=999", "data.seq_len"), ("model.zz=1", "model.zz"),
    ("optim.lr=abc", "optim.lr"), ("run.amp=fp8", "run.amp")])
def test_bad_config_exits_2_naming_the_field(override, field, capsys, tmp_path):
    assert main(["train", override, f"run.out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_yaml_config_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model:\n  method: entmax43\n  n_embd: 32\noptim:\n  lr: 0.002\n")
    cfg = load_config(cfg_file, ["optim.lr=5e-4", "model.learn_alpha=true"])
    assert cfg.model.method == "entmax43" and cfg.model.n_embd == 32
    assert cfg.optim.lr == 5e-4 and cfg.model.learn_alpha is True
    cfg_file.write_text("model: [1, 2]\n")
    with pytest.raises(ConfigError, match="model"):
        load_config(cfg_file)


def test_text_corpus_jsonl_and_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_text("\n".join(json.dumps({"text": "Once upon a time " * 20}) for _ in range(10)))
    (tmp_path / "d" / "b.txt").write_text("The end. " * 100)
    out = Trainer(load_config(None, TINY + ["data.source=text", f"data.path={tmp_path / 'd'}", "optim.max_steps=2",
                                            f"run.out_dir={tmp_path / 'run'}"])).train()
    assert out["step"] == 2 and out["val_loss"] > 0


def _cli(*argv):
    return main(["train", *argv])


def test_cli_resume_run_dir_needs_no_repeated_overrides(tmp_path, capsys):
    """`train --resume RUN_DIR` continues with the config saved there and matches an uninterrupted run."""
    common = TINY + ["model.method=sparsemax", "optim.max_steps=6", "run.ckpt_interval=3"]
    assert _cli(*common, f"run.out_dir={tmp_path / 'a'}") == 0
    assert _cli(*common, f"run.out_dir={tmp_path / 'b'}", "--stop-at", "3") == 0
    assert "stopped (--stop-at) at step 3 of 6" in capsys.readouterr().out
    assert _cli("--resume", str(tmp_path / "b")) == 0
    assert "resuming at step 3 of 6" in capsys.readouterr().out
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    # a finished run: nothing to do; raising optim.max_steps trains on, and says so
    assert _cli("--resume", str(tmp_path / "b")) == 0
    assert "already finished at step 6" in capsys.readouterr().out
    assert _cli("--resume", str(tmp_path / "b"), "optim.max_steps=8") == 0
    out = capsys.readouterr().out
    assert "extending optim.max_steps 6 -> 8" in out and "finished" in out
    assert load_checkpoint(tmp_path / "b" / "ckpt.pt")["step"] == 8
    assert json.loads((tmp_path / "b" / "config.json").read_text())["optim"]["max_steps"] == 8


@pytest.mark.parametrize("override", ["model.method=sparsemax", "optim.lr=0.01", "run.seed=1", "optim.batch_size=8",
                                      "data.n_stories=70"])
def test_cli_resume_refuses_trajectory_changes_unless_forced(tmp_path, capsys, override):
    run = tmp_path / "r"
    assert _cli(*TINY, "optim.max_steps=2", f"run.out_dir={run}") == 0
    capsys.readouterr()
    assert _cli("--resume", str(run), override, "optim.max_steps=3") == 2
    err = capsys.readouterr().err
    assert override.split("=")[0] in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert load_checkpoint(run / "ckpt.pt")["step"] == 2  # untouched
    assert _cli("--resume", str(run), override, "optim.max_steps=3", "--force") == 0
    assert "--allow-changes: " + override.split("=")[0] in capsys.readouterr().out
    assert load_checkpoint(run / "ckpt.pt")["step"] == 3


def test_cli_train_never_overwrites_a_run_silently(tmp_path, capsys):
    run = tmp_path / "r"
    assert _cli(*TINY, "optim.max_steps=2", f"run.out_dir={run}") == 0
    before = (run / "ckpt.pt").read_bytes()
    capsys.readouterr()
    assert _cli(*TINY, "optim.max_steps=2", "model.method=softmax", f"run.out_dir={run}") == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and len(err.strip().splitlines()) == 1
    assert (run / "ckpt.pt").read_bytes() == before
    assert _cli(*TINY, "optim.max_steps=2", "model.method=softmax", f"run.out_dir={run}", "--overwrite") == 0
    assert json.loads((run / "config.json").read_text())["model"]["method"] == "softmax"


@pytest.mark.parametrize("argv, needle", [
    (["--resume", "{tmp}/missing"], "does not exist"),
    (["--resume", "{tmp}/r", "--config", "stories_mm"], "drop --config"),
    (["--resume", "{tmp}/r", "run.out_dir=elsewhere"], "run.out_dir"),
    (["--resume", "{tmp}/r", "optim.max_steps=1"], "below the checkpoint's step 2"),
    (["--config", "no_such_config"], "no built-in config"),
    (["--force"], "only applies with --resume"),
])
def test_cli_resume_and_config_errors_are_one_line(tmp_path, capsys, argv, needle):
    assert _cli(*TINY, "optim.max_steps=2", f"run.out_dir={tmp_path / 'r'}") == 0
    capsys.readouterr()
    assert _cli(*[a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_builtin_configs_load_by_name_and_path():
    from kernelattn.training import builtin_configs

    found = builtin_configs()
    assert {"stories_mm", "stories_gpt"} <= found.keys()
    for name, path in found.items():
        by_name, by_path = load_config(name), load_config(path)
        assert by_name == by_path and load_config(f"{name}.yaml") == by_name
    assert load_config("stories_gpt").model.arch == "gpt"


def test_cli_configs_lists_and_prints(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert "stories_mm" in out and "stories_gpt" in out
    assert main(["configs", "stories_mm"]) == 0
    assert "method: entmax15" in capsys.readouterr().out
    assert main(["configs", "nope"]) == 2
