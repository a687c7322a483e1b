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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as e:  # bad input: one clear line, no traceback
        print(f"kernelattn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
