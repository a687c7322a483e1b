"""The ``kernelattn`` command line: one subcommand per runnable job.

Subcommands import their implementation lazily so ``kernelattn --help`` stays fast.
List options take comma-separated values everywhere (``--tasks copy,lm``); a
space-separated list (``--tasks copy lm``) is accepted as well.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

LISTS_NOTE = "List options take comma-separated values (e.g. --methods softmax,sparsemax); spaces work too."


class _ListAction(argparse.Action):
    """A list option: ``--x a,b``, ``--x a b`` or both; items converted by ``item_type``, checked against
    ``item_choices``."""

    def __init__(self, option_strings, dest, item_type=None, item_choices=None, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.item_type, self.item_choices = item_type or str, item_choices

    def __call__(self, parser, namespace, values, option_string=None):
        items = [x.strip() for v in values for x in str(v).split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentError(self, "expected a comma-separated list, got nothing")
        try:
            out = [self.item_type(x) for x in items]
        except (TypeError, ValueError):
            kind = getattr(self.item_type, "__name__", "value")
            raise argparse.ArgumentError(self, f"expected comma-separated {kind} values, got "
                                               f"{','.join(map(str, values))!r}") from None
        if self.item_choices is not None:
            bad = [x for x in out if x not in self.item_choices]
            if bad:
                raise argparse.ArgumentError(self, f"invalid choice {bad[0]!r} (choose from "
                                                   f"{', '.join(map(str, self.item_choices))})")
        setattr(namespace, self.dest, out)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser with one-line errors, and comma lists for every ``nargs='+'``/``'*'`` option
    (also for options other modules add, e.g. ``hopfield-bench``'s)."""

    def add_argument(self, *args, **kwargs):
        if args and args[0].startswith("-") and kwargs.get("nargs") in ("+", "*") and "action" not in kwargs:
            kwargs["action"] = _ListAction
            kwargs["item_type"] = kwargs.pop("type", None)
            kwargs["item_choices"] = kwargs.pop("choices", None)
            kwargs.setdefault("metavar", "LIST")
        return super().add_argument(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _kernels(args) -> int:
    from ._validation import check_int, check_number
    from .experiments.kernel_regression import run_kernel_regression
    from .training.engine import prepare_out_dir

    check_int(args.n, "--n", minimum=2, hint=" (the number of noisy samples)")
    check_number(args.noise, "--noise", nonnegative=True, hint=" (the noise standard deviation)")
    if args.out:
        prepare_out_dir(args.out, "--out")
    run_kernel_regression(n=args.n, noise=args.noise, seed=args.seed, out=args.out, plot=not args.no_plot)
    return 0


def _checkpoint_step(path: Path) -> int | None:
    """The step stored in a checkpoint, read without loading its tensors into memory."""
    from .training.checkpoint import REQUIRED_KEYS, load_checkpoint

    if not path.exists():
        return None
    # a damaged or foreign file raises CheckpointError (a ValueError naming the file): exit 2
    return load_checkpoint(path, map_location="cpu", mmap=True, required=REQUIRED_KEYS)["step"]


def _train(args) -> int:
    from .training.lock import RunLock

    is_main = int(os.environ.get("RANK", "0")) == 0
    say = print if is_main else (lambda *a, **k: None)
    if args.stop_at is not None and args.stop_at < 1:
        raise ValueError(f"--stop-at must be >= 1 (the step after which to stop), got {args.stop_at}")
    lock = RunLock("", "run.out_dir")  # taken below, once the folder is known; released on exit
    try:
        return _train_locked(args, lock, say, is_main)
    finally:
        lock.release()


def _train_locked(args, lock, say, is_main) -> int:
    from .training import Trainer, load_config, resume_config
    from .training.engine import holds_run, prepare_out_dir, refuse_overwrite

    step = None
    if args.resume:
        if args.config:
            raise ValueError("--resume RUN_DIR continues with the config saved in RUN_DIR; drop --config "
                             "(overrides such as optim.max_steps=2000 still apply)")
        if args.overwrite:
            raise ValueError("--resume continues a run and --overwrite discards it; choose one")
        if is_main and Path(args.resume, "config.json").is_file():
            # Lock before reading anything, so a run that another process is training is refused
            # at once (the lock names that process) rather than after building the model.
            lock.folder, lock.what = Path(args.resume), "--resume"
            lock.acquire()
        step = _checkpoint_step(Path(args.resume) / "ckpt.pt")
        cfg, notes = resume_config(args.resume, args.overrides, force=args.force, step=step)
        for note in notes:
            say(note)
        if step is None:
            say(f"{args.resume}: no checkpoint yet; starting at step 0 with the config saved there")
        elif step >= cfg.optim.max_steps:
            say(f"{args.resume}: already finished at step {step} of optim.max_steps={cfg.optim.max_steps}; nothing "
                f"to train (add optim.max_steps=N to train on)")
        else:
            say(f"{args.resume}: resuming at step {step} of {cfg.optim.max_steps}")
    else:
        if args.force:
            raise ValueError("--allow-changes (--force) only applies with --resume RUN_DIR")
        cfg = load_config(args.config, args.overrides)
        if holds_run(cfg.run.out_dir) and not args.overwrite:  # before building data and model
            raise refuse_overwrite(cfg.run.out_dir)
        if is_main:
            prepare_out_dir(cfg.run.out_dir)
            lock.folder, lock.what = Path(cfg.run.out_dir), "run.out_dir"
            lock.acquire()
    out = cfg.run.out_dir
    try:
        result = Trainer(cfg).train(resume=bool(args.resume), stop_at=args.stop_at, overwrite=args.overwrite,
                                    force=args.force)
    except KeyboardInterrupt:
        say(f"interrupted; `kernelattn train --resume {out}` continues from its last checkpoint "
            f"(every run.ckpt_interval={cfg.run.ckpt_interval} steps)", file=sys.stderr)
        raise
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
    at = result.get("step", step)
    if at == cfg.optim.max_steps:
        say(f"finished: {shown}; checkpoint and metrics in {out} (train on with `kernelattn train --resume {out} "
            f"optim.max_steps=N`)")
    else:
        say(f"stopped (--stop-at) at step {at} of {cfg.optim.max_steps}: {shown}; checkpoint and metrics in {out} "
            f"(continue with `kernelattn train --resume {out}`)")
    return 0


def _configs(args) -> int:
    from .training import builtin_configs

    found = builtin_configs()
    if args.name:
        name = args.name[:-5] if args.name.endswith(".yaml") else args.name
        if name not in found:
            raise ValueError(f"no built-in config {args.name!r}; built-in: {', '.join(found)}")
        print(found[name].read_text(), end="")
        return 0
    width = max(map(len, found), default=0)
    for name, path in found.items():
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        print(f"{name:<{width}}  {first}")
    print(f"\nUse one with `kernelattn train --config NAME`; print one with `kernelattn configs NAME` "
          f"(e.g. to copy and edit: kernelattn configs {next(iter(found), 'NAME')} > my.yaml). Files: "
          f"{next(iter(found.values())).parent if found else '-'}")
    return 0


def _hopfield_bench(args) -> int:
    from .hopfield.bench import run

    return run(args)


def _reproduce(args) -> int:
    from .experiments.reproduce import reproduce

    archs = ["memory_mosaics", "gpt"] if args.arch == "both" else [args.arch]
    reproduce(args.preset, args.tasks, args.methods, args.seeds, args.out, archs, args.jobs, args.threads,
              args.device)
    return 0


def _report(args) -> int:
    from .experiments.reproduce import report

    for path in report(args.results, args.out):
        print(path)
    return 0


def _preset_tasks_help() -> str:
    from .experiments.presets import PRESETS

    return "; ".join(f"{name}: {','.join(p.default_tasks)}" for name, p in PRESETS.items())


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``kernelattn`` parser; given ``argv``, subcommands it does not name skip their heavy imports."""
    parser = _Parser(prog="kernelattn", description="Sparse attention as compact kernel regression.",
                     epilog=LISTS_NOTE)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("kernels", help="Nadaraya-Watson on a noisy 1-D signal with every kernel and both "
                                       "normalisations: table + PNG")
    p.add_argument("--n", type=int, default=200, help="number of noisy samples (default 200)")
    p.add_argument("--noise", type=float, default=0.25, help="noise standard deviation (default 0.25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/kernels", help="output folder (default runs/kernels)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.set_defaults(func=_kernels)

    p = sub.add_parser("train", help="train a Memory Mosaics or GPT model from a YAML config; "
                                     "multi-process with torchrun",
                       description="Train from a config (a built-in name such as stories_mm, or a YAML file with "
                                   "sections model, data, optim, run) with section.field=value overrides, e.g. "
                                   "`kernelattn train --config stories_mm model.method=sparsemax "
                                   "optim.max_steps=500`. Continue a run with `kernelattn train --resume RUN_DIR`. "
                                   "Data-parallel: `torchrun --nproc_per_node=2 -m kernelattn train ...`.")
    p.add_argument("--config", metavar="NAME|FILE",
                   help="a built-in config by name (see `kernelattn configs`) or a YAML file")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR with the config saved there, exactly where its checkpoint "
                        "stopped; optim.max_steps=N trains it further; other changes need --force")
    p.add_argument("--allow-changes", "--force", dest="force", action="store_true",
                   help="with --resume: allow overrides that change the run (method, lr, seed, data, ...); "
                        "they are listed as it starts")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even if run.out_dir already holds a run (it is discarded)")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this step, leaving a checkpoint "
                                                              "(as an interrupted run would)")
    p.add_argument("overrides", nargs="*", metavar="section.field=value")
    p.set_defaults(func=_train)

    p = sub.add_parser("configs", help="list the built-in training configs, or print one",
                       description="List the configs shipped with the package (usable as `kernelattn train "
                                   "--config NAME`), or print one as YAML.")
    p.add_argument("name", nargs="?", help="print this config's YAML")
    p.set_defaults(func=_configs)

    p = sub.add_parser("reproduce", help="the paper's comparison of kernels: tasks x methods x seeds, resumable; "
                                         "results.json, results.md and PNG plots",
                       epilog=LISTS_NOTE)
    p.add_argument("--preset", default="quick", help="quick (2-core CPU, minutes; the default), cpu (three seeds, "
                                                     "about 94 min on 2 cores), paper (the paper's "
                                                     "sizes, for a GPU) or smoke (every task in about a minute, "
                                                     "numbers meaningless: checks a set-up)")
    p.add_argument("--tasks", nargs="+", default=None,
                   help="from copy,reverse,sort,mqmtar,icll,lm (default: the preset's list — "
                        f"{_preset_tasks_help()})")
    p.add_argument("--methods", nargs="+", default=None, help="method names (default: the paper's eight)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="seeds, e.g. 0,1,2 (default: the preset's — 0, or 0,1,2 for cpu)")
    p.add_argument("--arch", default="memory_mosaics", choices=["memory_mosaics", "gpt", "both"])
    p.add_argument("--out", default="runs/reproduce", help="output folder (default runs/reproduce)")
    p.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                   help="runs trained in parallel processes (default: up to 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("report", help="regenerate results.md and the plots of a sweep from its results.json")
    p.add_argument("results", help="a results.json written by `kernelattn reproduce`, or its folder")
    p.add_argument("--out", default=None, help="output folder (default: next to results.json)")
    p.set_defaults(func=_report)

    p = sub.add_parser("hopfield-bench", help="masked-digit retrieval per Hopfield mapping and memory size, "
                                              "metastable-state counts, and a HopfieldPooling MIL example: "
                                              "tables + PNG", epilog=LISTS_NOTE)
    if argv is None or "hopfield-bench" in argv:  # its options come from the benchmark module (imports torch)
        from .hopfield.bench import add_arguments

        add_arguments(p)
    p.set_defaults(func=_hopfield_bench)
    return parser


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _from_validation(e: TypeError) -> bool:
    """Whether a TypeError was raised by kernelattn's validation layer (a user error, not a bug)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.endswith("_validation.py")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # overrides after an option (`train --stop-at 2 optim.lr=1e-3`) are still overrides
            if getattr(args, "command", None) == "train" and all("=" in e and not e.startswith("-") for e in extra):
                args.overrides = [*args.overrides, *extra]
            else:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help (0) or a bad argument (2, one line already printed)
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FloatingPointError) as e:
        # Bad input or config (ValueError, TypeError from the validation layer), or a
        # divergence (TrainingDiverged, the checkpoint kept): one clear line, no traceback.
        if isinstance(e, TypeError) and not _from_validation(e):
            raise  # a TypeError from anywhere else is a bug: keep its traceback
        print(f"kernelattn {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a file or folder the command could not read or write
        where = f" ({e.filename})" if getattr(e, "filename", None) and str(e.filename) not in str(e) else ""
        print(f"kernelattn {args.command}: error: {_one_line(e)}{where}; check the paths given to the command",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kernelattn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
