"""Census of the command line's answers to the faults listed in issue 10 (hardening).

Each fault runs ``python -m kernelattn ...`` in a subprocess and is reported with its
exit code, whether stderr held a Python traceback, and the last line of stderr. The
goal is exit code 2 and one clear line for every config, path, device or checkpoint
problem, and no lost or doubled work.

    python benchmarks/cli_fault_census.py                    # the installed kernelattn
    python benchmarks/cli_fault_census.py --src OTHER/src    # another checkout's source

Each case runs in a fresh temporary folder; runs are tiny (a few CPU seconds each).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=32", "data.seq_len=32",
        "data.n_stories=40", "optim.batch_size=2", "optim.warmup_steps=1", "run.eval_interval=2",
        "run.eval_batches=1", "run.log_interval=1", "run.progress=false", "run.device=cpu", "run.threads=1"]


def _env(src: str | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(env, *argv, timeout=180, cwd=None):
    return subprocess.run([sys.executable, "-m", "kernelattn", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def _finished_run(env, d: Path, steps: int = 2) -> Path:
    run = d / "run"
    r = _cli(env, "train", *TINY, f"optim.max_steps={steps}", f"run.out_dir={run}")
    if r.returncode:
        raise SystemExit(f"could not make the base run:\n{r.stderr[-2000:]}")
    return run


def _damage(kind):
    def setup(env, d):
        run = _finished_run(env, d)
        ck = run / "ckpt.pt"
        if kind == "truncated":
            ck.write_bytes(ck.read_bytes()[:200])
        elif kind == "zero bytes":
            ck.write_bytes(b"")
        elif kind == "foreign pickle":
            ck.write_bytes(pickle.dumps({"hello": "world"}))
        elif kind == "directory":
            ck.unlink()
            ck.mkdir()
        elif kind == "random bytes":
            ck.write_bytes(os.urandom(4096))
        return ["train", "--resume", str(run)]
    return setup


def _plain(*argv):
    return lambda env, d: [a.replace("{d}", str(d)) for a in argv]


def _under_a_file(env, d):
    (d / "afile").write_text("x")
    return ["train", *TINY, "optim.max_steps=1", f"run.out_dir={d / 'afile' / 'run'}"]


def _readonly_dir(env, d):
    ro = d / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: use a read-only place instead
        return ["train", *TINY, "optim.max_steps=1", "run.out_dir=/proc/kernelattn-census"]
    ro.chmod(0o500)
    return ["train", *TINY, "optim.max_steps=1", f"run.out_dir={ro / 'run'}"]


def _resume_changed(field):
    def setup(env, d):
        run = _finished_run(env, d)
        return ["train", "--resume", str(run), field, "optim.max_steps=3"]
    return setup


def _train_again(env, d):
    run = _finished_run(env, d)
    return ["train", *TINY, "optim.max_steps=1", f"run.out_dir={run}"]


def _resume_bad_config_json(env, d):
    run = _finished_run(env, d)
    (run / "config.json").write_text("[1, 2]")
    return ["train", "--resume", str(run)]


CASES = [
    # checkpoints
    ("checkpoint truncated", _damage("truncated")),
    ("checkpoint zero bytes", _damage("zero bytes")),
    ("checkpoint foreign pickle", _damage("foreign pickle")),
    ("checkpoint is a directory", _damage("directory")),
    ("checkpoint random bytes", _damage("random bytes")),
    ("config.json not a mapping", _resume_bad_config_json),
    # paths
    ("run.out_dir under a file", _under_a_file),
    ("run.out_dir read-only", _readonly_dir),
    ("run.out_dir= (empty)", _plain("train", *TINY, "optim.max_steps=1", "run.out_dir=")),
    ("--config missing file", _plain("train", "--config", "{d}/nope.yaml")),
    ("data.path missing", _plain("train", *TINY, "data.source=text", "data.path={d}/none.txt",
                                 "run.out_dir={d}/r")),
    ("kernels --out under a file", lambda env, d: ((d / "f").write_text("x"), ["kernels", "--n", "20", "--no-plot",
                                                                               "--out", str(d / "f" / "k")])[1]),
    # devices and threads
    ("run.device=tpu", _plain("train", *TINY, "optim.max_steps=1", "run.device=tpu", "run.out_dir={d}/r")),
    ("run.device=cuda:99", _plain("train", *TINY, "optim.max_steps=1", "run.device=cuda:99", "run.out_dir={d}/r")),
    ("run.threads=-2", _plain("train", *TINY, "optim.max_steps=1", "run.threads=-2", "run.out_dir={d}/r")),
    ("run.threads=0", _plain("train", *TINY, "optim.max_steps=1", "run.threads=0", "run.out_dir={d}/r")),
    ("reproduce --device tpu", _plain("reproduce", "--preset", "smoke", "--tasks", "copy", "--methods", "softmax",
                                      "--device", "tpu", "--jobs", "1", "--out", "{d}/s")),
    ("reproduce --threads 0", _plain("reproduce", "--preset", "smoke", "--tasks", "copy", "--methods", "softmax",
                                     "--threads", "0", "--jobs", "1", "--out", "{d}/s")),
    # numbers
    ("divergence (optim.lr=1e30)", _plain("train", *TINY, "optim.max_steps=6", "optim.lr=1e30", "optim.grad_clip=0",
                                          "run.ckpt_interval=1", "run.out_dir={d}/r")),
    ("kernels --n -5", _plain("kernels", "--n", "-5", "--no-plot", "--out", "{d}/k")),
    ("kernels --noise nan", _plain("kernels", "--noise", "nan", "--no-plot", "--out", "{d}/k")),
    ("train --stop-at -1", _plain("train", *TINY, "optim.max_steps=2", "--stop-at", "-1", "run.out_dir={d}/r")),
    ("model.dropout=1.5", _plain("train", *TINY, "optim.max_steps=1", "model.dropout=1.5", "run.out_dir={d}/r")),
    ("data.source=nope", _plain("train", *TINY, "optim.max_steps=1", "data.source=nope", "run.out_dir={d}/r")),
    ("reproduce --seeds ''", _plain("reproduce", "--preset", "smoke", "--seeds", "", "--out", "{d}/s")),
    ("reproduce --jobs 0", _plain("reproduce", "--preset", "smoke", "--jobs", "0", "--out", "{d}/s")),
    ("reproduce --preset nope", _plain("reproduce", "--preset", "nope", "--out", "{d}/s")),
    ("reproduce --methods nope", _plain("reproduce", "--preset", "smoke", "--methods", "nope", "--out", "{d}/s")),
    # lost or doubled work
    ("train again in a finished run", _train_again),
    ("resume with data.seq_len=16", _resume_changed("data.seq_len=16")),
    ("resume with run.seed=1", _resume_changed("run.seed=1")),
    ("resume with optim.lr=0.01", _resume_changed("optim.lr=0.01")),
    ("resume with optim.batch_size=4", _resume_changed("optim.batch_size=4")),
]


def _concurrent(env, d: Path) -> subprocess.CompletedProcess:
    """A second `train` on the run directory a first one is training in."""
    run = d / "run"
    first = subprocess.Popen([sys.executable, "-m", "kernelattn", "train", *TINY, "optim.max_steps=400",
                              "run.ckpt_interval=1", f"run.out_dir={run}"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / "ckpt.pt").exists() and time.time() < deadline:
            time.sleep(0.2)
        return _cli(env, "train", "--resume", str(run))
    finally:
        first.kill()
        first.wait()


def _orphans(env, d: Path) -> subprocess.CompletedProcess:
    """Kill `reproduce --jobs 2` with SIGKILL while its two workers train; time how long they outlive it."""
    out = d / "s"
    parent = subprocess.Popen([sys.executable, "-m", "kernelattn", "reproduce", "--preset", "smoke", "--tasks",
                               "copy", "--methods", "softmax,sparsemax", "--jobs", "2", "--out", str(out)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    # both workers are training once their run folders hold a config.json
    while time.time() < deadline and len(list(out.glob("runs/**/config.json"))) < 2 and parent.poll() is None:
        time.sleep(0.1)
    workers = _children(parent.pid)
    parent.kill()
    parent.wait()
    t0 = time.time()
    while any(map(_alive, workers)) and time.time() - t0 < 30:
        time.sleep(0.1)
    alive = [p for p in workers if _alive(p)]
    for p in alive:  # clean up what the census left behind
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if alive:
        msg = f"{len(alive)} of {len(workers)} training workers still running 30 s after the parent was killed"
    else:
        msg = f"all {len(workers)} training workers exited {time.time() - t0:.1f} s after the parent was killed"
    return subprocess.CompletedProcess([], 0 if workers and not alive else 1, "", msg)


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(p.name))
    # the spawn start method also runs a resource tracker: keep the pool workers only
    return [c for c in out if "spawn_main" in _cmdline(c)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", help="put this source folder first on PYTHONPATH (e.g. another checkout's src)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--only", help="run only cases whose name contains this text")
    args = ap.parse_args()
    env = _env(args.src)
    where = subprocess.run([sys.executable, "-c", "import kernelattn; print(kernelattn.__file__)"], env=env,
                           capture_output=True, text=True).stdout.strip()
    print(f"kernelattn from {where}")
    cases = CASES + [("second train on a locked run", None), ("orphan workers of reproduce --jobs 2", None)]
    rows = []
    for name, setup in cases:
        if args.only and args.only not in name:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            t0 = time.perf_counter()
            try:
                if name.startswith("second train"):
                    r = _concurrent(env, d)
                elif name.startswith("orphan"):
                    r = _orphans(env, d)
                else:
                    r = _cli(env, *setup(env, d), cwd=d)
            except subprocess.TimeoutExpired:
                r = subprocess.CompletedProcess([], "timeout", "", "timed out")
            finally:
                for p in d.rglob("*"):  # undo the read-only case so the folder can be removed
                    if p.is_dir():
                        p.chmod(0o700)
            err = r.stderr.strip().splitlines()
            row = {"case": name, "exit": r.returncode, "traceback": "Traceback" in r.stderr,
                   "stderr_lines": len(err), "message": err[-1][:150] if err else "",
                   "seconds": round(time.perf_counter() - t0, 1)}
            if name.startswith("run.out_dir= "):
                row["trained_into_None"] = (d / "None").exists()
            rows.append(row)
            print(f"{name:<38} exit={str(row['exit']):<3} traceback={'yes' if row['traceback'] else 'no ':<3} "
                  f"lines={row['stderr_lines']:<3} {row['message']}", flush=True)
    def ok(r):  # the orphan case passes when no worker outlives its parent; every other case by exit 2, one line
        if r["case"].startswith("orphan"):
            return r["exit"] == 0
        return r["exit"] == 2 and not r["traceback"] and r["stderr_lines"] == 1

    clean = sum(map(ok, rows))
    tb = sum(1 for r in rows if r["traceback"])
    other = len(rows) - clean - tb
    print(f"\n{len(rows)} faults: {clean} handled (exit 2 and one line; no orphan), {tb} with a traceback, "
          f"{other} other (wrong exit code, several lines, work doubled or orphaned)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
