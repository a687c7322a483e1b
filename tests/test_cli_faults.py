"""The command line under faults (issue 10): one line and exit code 2 for every config, path,
device or checkpoint problem; no run lost, doubled or orphaned.

Runs are tiny (1-layer, 16-dim, a few steps). The subprocess tests (kill and resume, the
lock held by a live run, orphaned sweep workers) start real ``kernelattn`` processes.
"""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kernelattn.cli import main
from kernelattn.training import ConfigError, Trainer, load_checkpoint, load_config
from kernelattn.training.checkpoint import CheckpointError
from kernelattn.training.lock import RunLock, RunLocked

TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=32", "data.seq_len=32",
        "data.n_stories=40", "optim.batch_size=2", "optim.warmup_steps=1", "run.eval_interval=2",
        "run.eval_batches=1", "run.log_interval=1", "run.progress=false", "run.device=cpu"]
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK"))},
       "OMP_NUM_THREADS": "1"}


def _one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("base") / "run"
    assert main(["train", *TINY, "optim.max_steps=2", f"run.out_dir={run}"]) == 0
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


# -- damaged checkpoints -----------------------------------------------------------------

def _damage(ck: Path, kind: str) -> None:
    if kind == "truncated":
        ck.write_bytes(ck.read_bytes()[:300])
    elif kind == "zero bytes":
        ck.write_bytes(b"")
    elif kind == "foreign pickle":
        ck.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    elif kind == "foreign torch file":
        torch.save({"step": 3}, ck)  # a torch file, but not one of our checkpoints
    elif kind == "directory":
        ck.unlink()
        ck.mkdir()


KINDS = ["truncated", "zero bytes", "foreign pickle", "foreign torch file", "directory"]


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_checkpoint_is_one_line_exit_2(run_copy, capsys, kind):
    _damage(run_copy / "ckpt.pt", kind)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_copy), "optim.max_steps=4"]) == 2
    _one_line_error(capsys, "checkpoint", str(run_copy / "ckpt.pt"))


@pytest.mark.parametrize("kind", ["truncated", "directory"])
def test_damaged_checkpoint_raises_checkpoint_error_in_the_trainer(run_copy, kind):
    """The path `reproduce` takes (Trainer.train(resume=True), no CLI) names the file too."""
    _damage(run_copy / "ckpt.pt", kind)
    cfg = load_config(None, TINY + ["optim.max_steps=4", f"run.out_dir={run_copy}"])
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        Trainer(cfg).train(resume=True)


# -- config, path and device problems ----------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["run.out_dir="], "run.out_dir"),
    (["run.out_dir={tmp}/afile/run"], "run.out_dir"),
    (["run.device=tpu", "run.out_dir={tmp}/r"], "run.device"),
    (["run.device=cuda:x", "run.out_dir={tmp}/r"], "run.device"),
    (["run.threads=-2", "run.out_dir={tmp}/r"], "run.threads"),
    (["run.threads=0", "run.out_dir={tmp}/r"], "run.threads"),
    (["model.dropout=1.5", "run.out_dir={tmp}/r"], "model.dropout"),
    (["data.options={{bogus: 1}}", "data.source=copy", "run.out_dir={tmp}/r"], "data.options"),
    (["--stop-at", "0", "run.out_dir={tmp}/r"], "--stop-at"),
])
def test_train_config_faults_are_one_line_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "afile").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{{", "{").replace("}}", "}") for a in argv]
    assert main(["train", *TINY, "optim.max_steps=1", *argv]) == 2
    _one_line_error(capsys, needle)
    assert not (tmp_path / "None").exists() and not Path("None").exists()


@pytest.mark.parametrize("argv, needle", [
    (["kernels", "--n", "-5"], "--n"), (["kernels", "--noise", "nan"], "--noise"),
    (["kernels", "--n", "20", "--out", "{tmp}/afile/k"], "--out"),
    (["reproduce", "--preset", "smoke", "--seeds", ""], "--seeds"),
    (["reproduce", "--preset", "smoke", "--seeds", "-1", "--out", "{tmp}/s"], "--seeds"),
    (["reproduce", "--preset", "smoke", "--threads", "0", "--out", "{tmp}/s"], "--threads"),
    (["reproduce", "--preset", "smoke", "--device", "tpu", "--out", "{tmp}/s"], "--device"),
    (["reproduce", "--preset", "smoke", "--out", "{tmp}/afile/s"], "--out"),
])
def test_other_command_faults_are_one_line_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "afile").write_text("x")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    _one_line_error(capsys, needle)


def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "r"
    argv = ["train", *TINY, "optim.max_steps=20", "optim.lr=1e30", "optim.grad_clip=0", "run.ckpt_interval=1",
            f"run.out_dir={run}"]
    assert main(argv) == 2
    err = _one_line_error(capsys, "diverged", "last good checkpoint", "optim.lr")
    st = load_checkpoint(run / "ckpt.pt")
    assert 1 <= st["step"] < 20, err
    assert all(torch.isfinite(t).all() for t in st["model"].values())  # never a NaN checkpoint
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    assert max(steps) == st["step"]  # the diverged step was not logged as a good one


# -- changed trajectory ------------------------------------------------------------------

def test_resume_lists_every_changed_field_and_allow_changes_accepts(run_copy, capsys):
    capsys.readouterr()
    assert main(["train", "--resume", str(run_copy), "data.seq_len=16", "run.seed=3", "run.progress=true",
                 "run.log_interval=5", "optim.max_steps=3"]) == 2
    err = _one_line_error(capsys, "data.seq_len 32 -> 16", "run.seed 0 -> 3", "--allow-changes")
    assert "run.progress" not in err and "run.log_interval" not in err  # harmless: not listed
    assert load_checkpoint(run_copy / "ckpt.pt")["step"] == 2
    assert main(["train", "--resume", str(run_copy), "run.seed=3", "optim.max_steps=3", "--allow-changes",
                 "run.progress=false"]) == 0
    assert "--allow-changes: run.seed changed 0 -> 3" in capsys.readouterr().out
    assert load_checkpoint(run_copy / "ckpt.pt")["step"] == 3


def test_trainer_resume_compares_with_the_checkpoints_own_config(run_copy):
    """`reproduce` resumes through Trainer.train(resume=True) without config.json: the checkpoint decides."""
    cfg = load_config(None, TINY + ["optim.max_steps=4", "optim.lr=0.01", "optim.batch_size=4",
                                    f"run.out_dir={run_copy}"])
    with pytest.raises(ConfigError, match=r"optim\.lr 0\.001 -> 0\.01.*optim\.batch_size 2 -> 4"):
        Trainer(cfg).train(resume=True)
    cfg = load_config(None, TINY + ["optim.max_steps=4", "run.eval_interval=1", f"run.out_dir={run_copy}"])
    assert Trainer(cfg).train(resume=True)["step"] == 4  # log/eval intervals are not the trajectory


# -- locks, kill and resume, orphans -----------------------------------------------------

def _cli_proc(*argv, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kernelattn", *argv], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(cond, timeout=120.0, proc=None) -> None:
    deadline = time.time() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process ended early: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            pytest.fail("timed out")
        time.sleep(0.01)


def _step(path: Path) -> int:
    try:
        return load_checkpoint(path)["step"]
    except (FileNotFoundError, CheckpointError):
        return -1  # not written yet (or being replaced)


def test_sigkill_mid_training_then_resume_is_bitwise_exact_and_the_lock_dies_with_the_process(tmp_path, capsys):
    steps = 40
    common = TINY + [f"optim.max_steps={steps}", "run.ckpt_interval=1", "run.eval_interval=1", "model.dropout=0.1",
                     "model.method=sparsemax"]
    run = tmp_path / "killed"
    proc = _cli_proc("train", *common, f"run.out_dir={run}")
    try:
        _wait_for(lambda: _step(run / "ckpt.pt") >= 2, proc=proc)
        # a second process on the same run is refused while the first one trains, naming it
        assert main(["train", "--resume", str(run)]) == 2
        _one_line_error(capsys, "in use by process", str(proc.pid))
        assert main(["train", *common, f"run.out_dir={run}", "--overwrite"]) == 2
        _one_line_error(capsys, "in use by process")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    killed_at = _step(run / "ckpt.pt")
    assert 2 <= killed_at < steps, "the run finished before it was killed; raise steps"
    # the OS released the lock with the process: resuming works at once
    assert main(["train", "--resume", str(run)]) == 0
    assert main(["train", *common, f"run.out_dir={tmp_path / 'straight'}"]) == 0
    a, b = load_checkpoint(run / "ckpt.pt"), load_checkpoint(tmp_path / "straight" / "ckpt.pt")
    assert a["step"] == b["step"] == steps
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k  # bitwise


def test_a_sweep_folder_held_by_another_process_is_refused(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = ("import sys, time; from kernelattn.training.lock import lock_folder; "
            f"lock_folder({str(out)!r}); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["reproduce", "--preset", "smoke", "--tasks", "copy", "--methods", "softmax", "--jobs", "1",
                     "--out", str(out)]) == 2
        _one_line_error(capsys, "--out", f"in use by process {holder.pid}")
        with pytest.raises(RunLocked):
            RunLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    RunLock(out).acquire().release()  # free again once the holder is gone


def _workers(parent: int) -> list[int]:
    kids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = (p / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent and b"spawn_main" in cmd:
                kids.append(int(p.name))
    return kids


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process table from /proc")
def test_workers_of_a_killed_sweep_exit_with_it(tmp_path):
    out = tmp_path / "sweep"
    parent = _cli_proc("reproduce", "--preset", "smoke", "--tasks", "copy", "--methods", "softmax,sparsemax",
                       "--jobs", "2", "--out", str(out), start_new_session=True)
    workers = []
    try:
        # both workers started and training (their run folders hold a config)
        _wait_for(lambda: len(list(out.glob("runs/**/config.json"))) >= 2, proc=parent)
        workers = _workers(parent.pid)
        assert len(workers) == 2
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while any(map(_running, workers)) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(map(_running, workers)), "sweep workers outlived their parent"
    finally:
        parent.kill()
        parent.wait()
        parent.stderr.close()
        for w in workers:
            if _running(w):
                os.kill(w, signal.SIGKILL)
