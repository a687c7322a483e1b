"""``kernelattn reproduce``: the paper's comparison of kernels as one resumable sweep.

Runs tasks × methods × seeds (× train sizes for ICLL, × architectures), each a training
run in its own folder ``OUT/runs/<task>/<arch>/<method>/seed<s>[/n<size>]``. A run that
finished has ``result.json`` and is skipped on the next call; a run that was interrupted
resumes from its checkpoint. Afterwards every ``result.json`` is gathered into
``OUT/results.json`` (the records and their provenance: version, git commit, preset,
sweep settings), ``OUT/results.md`` (mean ± std over seeds) and PNG plots, and the
summary table is printed.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..models.memory_mosaics import MEMORY_MOSAICS_ONLY
from .presets import ALL_METHODS, ALL_TASKS, PRESETS, Preset

__all__ = ["RunSpec", "plan_runs", "execute_run", "reproduce", "aggregate", "report"]

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when the sweep process that started it dies.

    Without it, killing ``reproduce --jobs N`` (SIGKILL, an OOM kill, a closed terminal
    without a process group signal) leaves the workers training on as orphans, writing
    into the sweep's folders. On Linux the kernel delivers SIGTERM at the parent's death
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread notices the worker being
    re-parented within a second. A worker whose parent died while it was still starting
    (importing torch) exits here, before it takes any run.
    """
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass  # no usable libc: fall back to polling

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="kernelattn-parent-watch", daemon=True).start()

LENGTH_TASKS = ("copy", "reverse", "sort", "mqmtar")


@dataclass(frozen=True)
class RunSpec:
    task: str
    method: str
    seed: int
    arch: str = "memory_mosaics"
    train_size: int | None = None

    def folder(self, out: Path) -> Path:
        d = out / "runs" / self.task / self.arch / self.method.replace(":", "_") / f"seed{self.seed}"
        return d / f"n{self.train_size}" if self.train_size is not None else d


def plan_runs(preset: Preset, tasks, methods, seeds, archs) -> list[RunSpec]:
    runs = []
    for task in tasks:
        plan = preset.tasks[task]
        sizes = plan.train_sizes if task == "icll" else (None,)
        for arch in archs:
            for size in sizes:
                for method in methods:
                    for seed in seeds:
                        runs.append(RunSpec(task, method, seed, arch, size))
    return runs


def _task_options(spec: RunSpec, preset: Preset) -> dict:
    opts = dict(preset.tasks[spec.task].options)
    if spec.train_size is not None:
        opts["train_size"] = spec.train_size
    return opts


def _build_task(spec: RunSpec, preset: Preset):
    from ..tasks import build_task

    return build_task(spec.task, seq_len=preset.tasks[spec.task].seq_len, seed=spec.seed,
                      **_task_options(spec, preset))


def execute_run(spec: RunSpec, preset_name: str | Preset, out: str, device: str = "auto", threads: int = 1,
                progress: bool = False, stop_at: int | None = None) -> list[dict] | None:
    """Train and score one run; write ``result.json`` (atomically) and return its records.

    ``stop_at`` stops training after that step, leaving the checkpoint and no result
    (what an interruption leaves behind); the next call resumes from it.
    """
    import torch

    from ..training import Trainer, load_config

    torch.set_num_threads(threads)
    preset = preset_name if isinstance(preset_name, Preset) else PRESETS[preset_name]
    plan = preset.tasks[spec.task]
    folder = spec.folder(Path(out))
    task = _build_task(spec, preset)
    if getattr(task, "tokenizer", None) is not None and task.tokenizer.kind == "bpe":  # the run's vocabulary, kept
        folder.mkdir(parents=True, exist_ok=True)
        task.tokenizer.save(folder / "tokenizer.json")
    longest = max([task.seq_len] + [task.total_length(L) for L in task.test_lengths]) \
        if spec.task in LENGTH_TASKS else task.seq_len
    model = {**preset.model, **plan.model}
    ov = [f"model.arch={spec.arch}", f"model.method={spec.method}", f"model.topk={preset.topk}",
          f"model.block_size={longest}", f"data.seq_len={task.seq_len}",
          f"optim.max_steps={plan.steps}", f"optim.batch_size={plan.batch_size}", f"optim.lr={plan.lr}",
          f"optim.grad_accum={plan.grad_accum}", f"optim.min_lr={plan.min_lr}", f"optim.warmup_steps={plan.warmup_steps}",
          f"optim.weight_decay={plan.weight_decay}", f"run.eval_interval={plan.eval_interval}",
          f"run.ckpt_interval={max(50, plan.steps // 4)}", "run.eval_batches=2", f"run.log_interval=10",
          f"run.out_dir={folder}", f"run.seed={spec.seed}", f"run.device={device}", f"run.progress={progress}",
          # the task as data source, so the run's saved config.json rebuilds it (`kernelattn train --resume`)
          f"data.source={spec.task}", f"data.options={json.dumps(_task_options(spec, preset))}"]
    ov += [f"model.{k}={v}" for k, v in model.items() if not (spec.arch == "gpt" and k in MEMORY_MOSAICS_ONLY)]
    cfg = load_config(None, ov)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, source=task)
    last = trainer.train(resume=True, stop_at=stop_at)
    if stop_at is not None and trainer.step < plan.steps:
        return None
    trainer.model.eval()
    records = task.final_metrics(trainer.model, trainer.device)
    base = {"task": spec.task, "method": spec.method, "seed": spec.seed, "arch": spec.arch}
    if spec.train_size is not None:
        base["train_size"] = spec.train_size
    records = [{**base, **r} for r in records]
    if spec.task == "lm":  # the validation curve, so plots need only results.json
        log = folder / "metrics.jsonl"
        for row in map(json.loads, log.read_text().splitlines() if log.exists() else []):
            if "val_loss" in row:
                records.append({**base, "metric": "val_loss_curve", "step": row["step"], "value": row["val_loss"]})
    records.append({**base, "metric": "final_train_loss", "value": last.get("train_loss", float("nan"))})
    records.append({**base, "metric": "train_seconds", "value": time.perf_counter() - t0})
    # the code that trained this run: a sweep finished in parts can span commits (`run_code` in results.json)
    commit, dirty = _git_commit()
    from .. import __version__

    (folder / "run_provenance.json").write_text(json.dumps(
        {"version": __version__, "git_commit": commit, "git_dirty": dirty, "torch": torch.__version__}))
    tmp = folder / "result.json.tmp"
    tmp.write_text(json.dumps(records, indent=1))
    os.replace(tmp, folder / "result.json")
    return records


def _run_code(runs: list[RunSpec], outp: Path) -> dict[str, int]:
    """How many of the sweep's runs each code version trained (``version@commit[+dirty]``)."""
    counts: dict[str, int] = {}
    for spec in runs:
        f = spec.folder(outp) / "run_provenance.json"
        try:
            d = json.loads(f.read_text())
            key = f"{d.get('version')}@{(d.get('git_commit') or 'no-git')[:12]}{'+dirty' if d.get('git_dirty') else ''}"
        except (OSError, ValueError):
            key = "unrecorded"  # trained before runs recorded their code
        counts[key] = counts.get(key, 0) + 1
    return counts


def _baselines(preset: Preset, seeds, out: Path) -> list[dict]:
    """In-context n-gram baselines for ICLL (they need no training), one set per seed and size."""
    recs = []
    for seed in seeds:
        for size in preset.tasks["icll"].train_sizes:
            task = _build_task(RunSpec("icll", "2gram", seed, train_size=size), preset)
            for r in task.baseline_metrics():
                recs.append({"task": "icll", "seed": seed, "arch": "none", "train_size": size, **r})
    return recs


def reproduce(preset: str | Preset = "quick", tasks=None, methods=None, seeds=None, out: str = "runs/reproduce",
              archs=("memory_mosaics",), jobs: int = 1, threads: int = 1, device: str = "auto") -> list[dict]:
    """Run (or finish) a sweep and write its results, table and plots. Returns all records."""
    if isinstance(preset, Preset):
        p = preset
    elif preset in PRESETS:
        p = PRESETS[preset]
    else:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    tasks = list(tasks or p.default_tasks)
    methods = list(methods or p.methods)
    seeds = list(p.seeds if seeds is None else seeds)
    for t in tasks:
        if t not in p.tasks:
            known = f"the {p.name} preset runs {', '.join(p.tasks)}" if t in ALL_TASKS else \
                f"choose from {', '.join(ALL_TASKS)}"
            raise ValueError(f"unknown task {t!r} in --tasks; {known}")
    from ..mappings import resolve_mapping
    for m in methods:
        resolve_mapping(m, topk=p.topk)  # fail before any training on a bad --methods
    for a in archs:
        if a not in ("memory_mosaics", "gpt"):
            raise ValueError(f"--arch must be memory_mosaics, gpt or both, got {a!r}")
    from .._validation import check_int
    from ..training.engine import prepare_out_dir, resolve_device
    from ..training.lock import RunLock

    check_int(jobs, "--jobs", minimum=1, hint=" (runs trained in parallel)")
    check_int(threads, "--threads", minimum=1, hint=" (torch threads per run)")
    seeds = [check_int(s, "--seeds", minimum=0, hint=" (seeds are non-negative integers)") for s in seeds]
    if not seeds or not methods or not tasks:
        empty = "--seeds" if not seeds else "--methods" if not methods else "--tasks"
        raise ValueError(f"{empty} is empty; give at least one value (e.g. --seeds 0,1)")
    # The same run twice in one sweep would be trained by two workers at once in one folder.
    tasks, methods, seeds = (list(dict.fromkeys(x)) for x in (tasks, methods, seeds))
    archs = list(dict.fromkeys(archs))
    resolve_device(device, "--device")  # fail here, not in every worker
    outp = prepare_out_dir(out, "--out")
    with RunLock(outp, "--out"):  # one sweep per folder; each run folder is locked again by its trainer
        return _sweep(p, tasks, methods, seeds, outp, archs, jobs, threads, device)


def _sweep(p: Preset, tasks, methods, seeds, outp: Path, archs, jobs: int, threads: int, device: str) -> list[dict]:
    out = str(outp)
    runs = plan_runs(p, tasks, methods, seeds, archs)
    todo = [r for r in runs if not (r.folder(outp) / "result.json").exists()]
    print(f"{p.name} preset: {len(runs)} runs ({len(runs) - len(todo)} already finished) -> {outp}")
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="sweep", unit="run", dynamic_ncols=True)
    if jobs == 1:
        for spec in todo:
            bar.set_postfix_str(f"{spec.task}/{spec.method}/seed{spec.seed}")
            execute_run(spec, p, out, device, threads, progress=True)
            bar.update(1)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futs = {pool.submit(execute_run, spec, p, out, device, threads, False): spec for spec in todo}
            try:
                for fut in as_completed(futs):
                    fut.result()  # re-raise a worker's error here
                    spec = futs[fut]
                    bar.set_postfix_str(f"done {spec.task}/{spec.method}/seed{spec.seed}")
                    bar.update(1)
            except BaseException:
                # Do not start the queued runs after a failure; the running ones finish or
                # stop at their next checkpoint boundary with the pool.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    bar.close()
    records = []
    for spec in runs:
        records += json.loads((spec.folder(outp) / "result.json").read_text())
    if "icll" in tasks:
        records += _baselines(p, seeds, outp)
    wall = time.perf_counter() - t0
    prov = provenance(p, dict(tasks=tasks, methods=methods, seeds=list(seeds), archs=list(archs), jobs=jobs,
                              threads=threads, device=device),
                      started=started, wall_seconds=round(wall, 1), runs_trained=len(todo), runs_total=len(runs),
                      run_code=_run_code(runs, outp))
    written = aggregate(records, outp, preset=p.name, provenance=prov)
    present = {r["task"] for r in records}
    order = {m: i for i, m in enumerate(ALL_METHODS + ("2gram", "3gram"))}
    print("\n" + "\n".join(_summary(records, present, order)[2:]) + "\n")
    print(f"sweep done in {wall:.0f} s ({len(todo)} runs trained now, {len(runs) - len(todo)} were finished before)")
    print(f"tables: {outp / 'results.md'}   records: {outp / 'results.json'}")
    print("plots:  " + "  ".join(str(x) for x in written))
    return records


def _git_commit() -> tuple[str | None, bool | None]:
    """The commit of the source tree this package runs from, if it runs from a git checkout (``src/kernelattn``)."""
    import subprocess

    pkg = Path(__file__).resolve().parents[1]
    try:
        top = subprocess.run(["git", "-C", str(pkg), "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                             timeout=10)
        if top.returncode or Path(top.stdout.strip()).resolve() / "src" / "kernelattn" != pkg:
            return None, None  # installed copy (site-packages), not the checkout's own source
        head = subprocess.run(["git", "-C", str(pkg), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(pkg), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head or None, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, None


def provenance(preset: Preset, sweep: dict, **extra) -> dict:
    """What produced a sweep's results: package version, git commit, the full preset and sweep settings."""
    import dataclasses
    import platform
    import sys

    import torch

    from .. import __version__

    commit, dirty = _git_commit()
    return {"package": "kernelattn", "version": __version__, "git_commit": commit, "git_dirty": dirty,
            "command": " ".join(["kernelattn", *sys.argv[1:]])
            if Path(sys.argv[0]).name in ("kernelattn", "__main__.py") else None,  # None: called from Python
            "preset": preset.name, "preset_config": dataclasses.asdict(preset), "sweep": sweep,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), **extra}


# -- aggregation -------------------------------------------------------------------------

def _mean_std(vals: list[float]) -> str:
    if len(vals) == 1:
        return f"{vals[0]:.3g}" if abs(vals[0]) >= 10 else f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def _pct(vals: list[float]) -> str:
    if len(vals) == 1:
        return f"{100 * vals[0]:.1f}"
    return f"{100 * statistics.mean(vals):.1f} ± {100 * statistics.stdev(vals):.1f}"


def _table(records, task, metric, key, fmt, order) -> list[str]:
    cells = defaultdict(list)
    cols = set()
    for r in records:
        if r["task"] == task and r["metric"] == metric:
            cells[(r["method"], r.get("arch"), r.get(key))].append(r["value"])
            cols.add(r.get(key))
    cols = sorted(c for c in cols if c is not None) or [None]
    rows = sorted({(m, a) for m, a, _ in cells}, key=lambda ma: (order.get(ma[0], 99), ma[1] or ""))
    many_arch = len({a for _, a in rows if a != "none"}) > 1
    head = "| method | " + " | ".join(f"{key} {c}" if c is not None else metric for c in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for m, a in rows:
        name = f"{m} ({a})" if many_arch and a != "none" else m
        lines.append(f"| {name} | " + " | ".join(fmt(cells[(m, a, c)]) if cells[(m, a, c)] else "–" for c in cols)
                     + " |")
    return lines


def _summary(records, present, order) -> list[str]:
    """One row per method: each task's headline metric, in-distribution and at the longest test."""
    def mean_of(task, metric, **where):
        vals = [r["value"] for r in records if r["task"] == task and r["metric"] == metric
                and all(r.get(k) == v for k, v in where.items())]
        return vals

    cols = []  # (header, task, metric, where, formatter)
    for task in LENGTH_TASKS:
        if task in present:
            lens = sorted({r["length"] for r in records if r["task"] == task and "length" in r})
            metric = "recall" if task == "mqmtar" else "exact_match"
            short = "recall" if task == "mqmtar" else "exact"
            cols.append((f"{task} {short} @{lens[0]}", task, metric, {"length": lens[0]}, _pct))
            cols.append((f"{task} {short} @{lens[-1]}", task, metric, {"length": lens[-1]}, _pct))
    if "icll" in present:
        n = max(r["train_size"] for r in records if r["task"] == "icll" and "train_size" in r)
        cols.append((f"ICLL acc (n={n})", "icll", "accuracy", {"train_size": n}, _pct))
        cols.append((f"ICLL TVD (n={n})", "icll", "tvd", {"train_size": n}, _mean_std))
    if "lm" in present:
        cols.append(("LM val loss", "lm", "val_loss", {}, _mean_std))
        cols.append(("LM name-recall loss", "lm", "recall_loss", {}, _mean_std))
    methods = sorted({r["method"] for r in records}, key=lambda m: order.get(m, 99))
    lines = ["## Summary (% unless a loss or TVD; lengths after @ are test lengths, the first one as long as "
             "training)", "", "| method | " + " | ".join(c[0] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m in methods:
        cells = []
        for _, task, metric, where, fmt in cols:
            vals = mean_of(task, metric, method=m, **where)
            cells.append(fmt(vals) if vals else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def aggregate(records: list[dict], out: Path, preset: str = "", provenance: dict | None = None) -> list[Path]:
    """Write results.json (``{"provenance": ..., "records": [...]}``), results.md and the PNG plots.

    Returns:
        The plot files written.
    """
    out = Path(out)
    provenance = provenance or {}
    (out / "results.json").write_text(json.dumps({"provenance": provenance, "records": records}, indent=1))
    order = {m: i for i, m in enumerate(ALL_METHODS + ("2gram", "3gram"))}
    seeds = sorted({r["seed"] for r in records})
    md = [f"# kernelattn reproduce — {preset} preset", "",
          f"Mean ± std over seeds {seeds} (a single seed shows the value). Teacher-forced argmax metrics, in %.", ""]
    present = {r["task"] for r in records}
    md += _summary(records, present, order) + [""]
    titles = {"copy": "Copy: exact match (%) by test length", "reverse": "Reverse: exact match (%) by test length",
              "sort": "Sort: exact match (%) by test length", "mqmtar": "MQMTAR: per-query recall (%) by context length"}
    for task in LENGTH_TASKS:
        if task in present:
            metric = "recall" if task == "mqmtar" else "exact_match"
            md += [f"## {titles[task]}", ""] + _table(records, task, metric, "length", _pct, order) + [""]
            second = "exact_accuracy" if task == "mqmtar" else "token_accuracy"
            md += [f"{task}: {second.replace('_', ' ')} (%)", ""] + _table(records, task, second, "length", _pct,
                                                                            order) + [""]
    if "icll" in present:
        md += ["## In-context language learning (RegBench): greedy accuracy (%) by number of training automata", ""]
        md += _table(records, "icll", "accuracy", "train_size", _pct, order) + [""]
        md += ["ICLL: total-variation distance to the automaton's next-symbol distribution (lower is better)", ""]
        md += _table(records, "icll", "tvd", "train_size", _mean_std, order) + [""]
    if "lm" in present:
        md += ["## Language modelling (built-in stories, bytes): validation loss (nats/byte)", ""]
        md += _table(records, "lm", "val_loss", None, _mean_std, order) + [""]
        md += ["Loss on re-mentioned names (bytes after the first letter of a name seen earlier in the window)", ""]
        md += _table(records, "lm", "recall_loss", None, _mean_std, order) + [""]
    secs = [r["value"] for r in records if r["metric"] == "train_seconds"]
    if secs:
        md += [f"{len(secs)} training runs; their wall-clock training times add up to {sum(secs) / 60:.1f} min "
               f"(runs trained in parallel with --jobs overlap, so the sweep itself took less).", ""]
    if provenance:
        sw = provenance.get("sweep", {})
        commit = provenance.get("git_commit")
        md += [f"Produced by kernelattn {provenance.get('version')}"
               + (f", commit {commit[:12]}{' with uncommitted changes' if provenance.get('git_dirty') else ''}"
                  if commit else "")
               + f", torch {provenance.get('torch')}, {provenance.get('cpu_count')} CPUs, --jobs {sw.get('jobs')}; "
               f"this call trained {provenance.get('runs_trained')} of {provenance.get('runs_total')} runs in "
               f"{provenance.get('wall_seconds', 0) / 60:.1f} min wall time (started {provenance.get('started')}). "
               f"Full settings: `provenance` in results.json.", ""]
        code = provenance.get("run_code") or {}
        if code:
            md += ["Code that trained the runs (version@commit: runs): "
                   + ", ".join(f"{k}: {v}" for k, v in sorted(code.items())) + ".", ""]
    (out / "results.md").write_text("\n".join(md))
    from .plots import plot_all

    return plot_all(records, out)


def report(results: str | Path, out: str | Path | None = None) -> list[Path]:
    """Regenerate ``results.md`` and the plots from a sweep's ``results.json``.

    The tables and figures are a function of the records alone, so a committed
    ``results.json`` (with its provenance) is the single source of what the docs show.

    Args:
        results: a ``results.json`` written by :func:`reproduce`, or the folder holding it.
        out: where to write ``results.md`` and the PNGs (default: next to ``results.json``);
            ``results.json`` itself is copied there unchanged when ``out`` is another folder.

    Returns:
        The files written (``results.md`` first, then the plots).
    """
    path = Path(results)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ValueError(f"no results.json at {path}; pass a results.json written by `kernelattn reproduce` "
                         f"or the folder holding it")
    try:
        data = json.loads(path.read_text())
        records, prov = data["records"], data.get("provenance") or {}
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(f"{path} is not a results.json written by `kernelattn reproduce` (expected an object with "
                         f"'provenance' and 'records')") from None
    dest = Path(out) if out is not None else path.parent
    dest.mkdir(parents=True, exist_ok=True)
    plots = aggregate(records, dest, preset=prov.get("preset", ""), provenance=prov)
    return [dest / "results.md", *plots]
