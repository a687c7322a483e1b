"""Train one ICLL configuration and compare it with the in-context 3-gram, position by position.

The ICLL settings of the ``quick`` and ``cpu`` presets were chosen with this script. It
trains one run (the quick preset's ICLL plan, with any field overridden), then prints the
test TVD of the model and of the 3-gram overall and by position in the string (0 = the
separator, where the next letter leaves the start state; k = after the string's k-th
letter), with the model's mass on valid letters. At ``seq_len`` 64 strings have at most
2 letters, so position 2 is never trained (its target is always ``|``), which costs the
model there and not the 3-gram.

    python benchmarks/icll_pilot.py --method softmax --steps 3000 --train-size 10000
    python benchmarks/icll_pilot.py --steps 3000 --train-size 10000 --model parametrization=default
    python benchmarks/icll_pilot.py --steps 3000 --train-size 1000

``--model``/``--plan`` take ``key=value`` pairs (YAML values) for the model and the task
plan (steps, batch_size, lr, ...). Runs go to ``--out`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch
import yaml

from kernelattn.experiments.presets import PRESETS
from kernelattn.experiments.reproduce import RunSpec, execute_run
from kernelattn.tasks import icll
from kernelattn.training.config import ConfigError


def _pairs(items: list[str], what: str) -> dict:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--{what} takes key=value, got {item!r}")
        out[key] = yaml.safe_load(raw)
    return out


def _position_in_string(x: torch.Tensor) -> torch.Tensor:
    """0 at a separator (and before the first letter), k after a string's k-th letter."""
    pos = torch.zeros_like(x)
    for b in range(x.shape[0]):
        k = 0
        for t in range(x.shape[1]):
            k = 0 if int(x[b, t]) == icll.SEP else k + 1
            pos[b, t] = k
    return pos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="softmax")
    ap.add_argument("--steps", type=int, default=None, help="default: the quick preset's")
    ap.add_argument("--seq-len", type=int, default=None, help="default: the quick preset's")
    ap.add_argument("--train-size", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", nargs="*", default=[], help="model overrides, key=value")
    ap.add_argument("--plan", nargs="*", default=[], help="task-plan overrides, key=value")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    quick = PRESETS["quick"]
    plan = quick.tasks["icll"]
    changes = _pairs(args.plan, "plan")
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.seq_len is not None:
        changes["seq_len"] = args.seq_len
    plan = dataclasses.replace(plan, model={**plan.model, **_pairs(args.model, "model")}, **changes)
    preset = dataclasses.replace(quick, tasks={**quick.tasks, "icll": plan})

    captured = {}
    scorer = icll.ICLLTask.final_metrics

    def keep(self, model, device):  # the trained model, for the per-position breakdown
        captured.update(task=self, model=model)
        return scorer(self, model, device)

    icll.ICLLTask.final_metrics = keep
    out = args.out or tempfile.mkdtemp(prefix="icll-pilot-")
    t0 = time.perf_counter()
    try:
        execute_run(RunSpec("icll", args.method, args.seed, train_size=args.train_size), preset, out,
                    threads=args.threads)
    except (ConfigError, ValueError) as e:  # a bad --model/--plan value or method: one line, not a traceback
        raise SystemExit(f"icll_pilot: {e}") from None
    finally:
        icll.ICLLTask.final_metrics = scorer
    seconds = time.perf_counter() - t0
    task, model = captured["task"], captured["model"]
    x, valid, scored = task.eval_set("test")
    p_model = task.model_probs(model, x, "cpu").double()
    p_gram = icll.ngram_probs(x, 3)
    pos = _position_in_string(x)
    tvd = icll.total_variation
    print(f"{args.method}, {args.train_size} automata, seq_len {plan.seq_len}, {plan.steps} steps, "
          f"model {plan.model}: trained and scored in {seconds:.0f} s")
    print(f"test TVD: model {tvd(p_model, valid, scored):.4f}, 3-gram {tvd(p_gram, valid, scored):.4f}")
    print("position | scored | model TVD | 3-gram TVD | model mass on valid letters")
    for k in range(int(pos[scored].max()) + 1):
        m = scored & (pos == k)
        if m.any():
            print(f"{k:8d} | {int(m.sum()):6d} | {tvd(p_model, valid, m):9.3f} | {tvd(p_gram, valid, m):10.3f} | "
                  f"{(p_model * valid).sum(-1)[m].mean():.3f}")


if __name__ == "__main__":
    main()
