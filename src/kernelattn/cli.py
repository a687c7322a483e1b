"""The ``kernelattn`` command line: one subcommand per runnable job.

Subcommands import their implementation lazily so ``kernelattn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def _kernels(args) -> int:
    from .experiments.kernel_regression import run_kernel_regression

    run_kernel_regression(n=args.n, noise=args.noise, seed=args.seed, out=args.out, plot=not args.no_plot)
    return 0


def _train(args) -> int:
    from .training import Trainer, load_config

    cfg = load_config(args.config, args.overrides)
    result = Trainer(cfg).train(resume=args.resume, stop_at=args.stop_at)
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
        print(f"finished at step {result.get('step')}: {shown}; checkpoint and metrics in {cfg.run.out_dir}")
    return 0


def _hopfield_bench(args) -> int:
    from .hopfield.bench import run

    return run(args)


def _reproduce(args) -> int:
    from .experiments.reproduce import reproduce

    def items(s):
        return [x.strip() for x in s.split(",") if x.strip()] if s else None

    try:
        seeds = [int(x) for x in items(args.seeds)]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    archs = ["memory_mosaics", "gpt"] if args.arch == "both" else [args.arch]
    reproduce(args.preset, items(args.tasks), items(args.methods), seeds, args.out, archs, args.jobs, args.threads,
              args.device)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kernelattn", description="Sparse attention as compact kernel regression.")
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
                       description="Train from a YAML config (sections model, data, optim, run) with "
                                   "section.field=value overrides, e.g. `kernelattn train model.method=sparsemax "
                                   "optim.max_steps=500`. Data-parallel: `torchrun --nproc_per_node=2 -m "
                                   "kernelattn train ...`.")
    p.add_argument("--config", help="YAML file with model/data/optim/run sections")
    p.add_argument("--resume", action="store_true", help="continue from run.out_dir/ckpt.pt if it exists")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this step, leaving a checkpoint "
                                                              "(as an interrupted run would)")
    p.add_argument("overrides", nargs="*", metavar="section.field=value")
    p.set_defaults(func=_train)

    p = sub.add_parser("reproduce", help="the paper's comparison of kernels: tasks x methods x seeds, resumable; "
                                         "results.json, results.md and PNG plots")
    p.add_argument("--preset", default="quick", help="quick (2-core CPU, minutes) or paper (GPU sizes)")
    p.add_argument("--tasks", default=None, help="comma-separated: copy,reverse,sort,mqmtar,icll,lm (default all)")
    p.add_argument("--methods", default=None, help="comma-separated method names (default: the paper's eight)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--arch", default="memory_mosaics", choices=["memory_mosaics", "gpt", "both"])
    p.add_argument("--out", default="runs/reproduce", help="output folder (default runs/reproduce)")
    p.add_argument("--jobs", type=int, default=max(1, min(2, __import__("os").cpu_count() or 1)),
                   help="runs trained in parallel processes (default: up to 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("hopfield-bench", help="masked-digit retrieval per Hopfield mapping and memory size, "
                                              "metastable-state counts, and a HopfieldPooling MIL example: "
                                              "tables + PNG")
    from .hopfield.bench import add_arguments

    add_arguments(p)
    p.set_defaults(func=_hopfield_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as e:  # bad input or config: one clear line, no traceback
        print(f"kernelattn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kernelattn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
