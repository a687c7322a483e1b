"""Experiment tasks: data generators with their own metrics (SPEC §4)."""

from __future__ import annotations

from .base import Record, Task, pad_batch
from .lengthgen import CopyTask, MQMTARTask, ReverseTask, SortTask, Vocab
from .lm import LMTask

__all__ = ["Task", "Record", "pad_batch", "CopyTask", "ReverseTask", "SortTask", "MQMTARTask", "Vocab", "LMTask",
           "ICLLTask", "TASKS", "build_task"]


def _icll(**kw):
    from .icll import ICLLTask
    return ICLLTask(**kw)


TASKS = {"copy": CopyTask, "reverse": ReverseTask, "sort": SortTask, "mqmtar": MQMTARTask, "icll": _icll,
         "lm": LMTask}


def __getattr__(name):
    if name == "ICLLTask":
        from .icll import ICLLTask
        return ICLLTask
    raise AttributeError(name)


def build_task(name: str, seq_len: int | None = None, seed: int = 0, **options):
    """A task by name (``copy``, ``reverse``, ``sort``, ``mqmtar``, ``icll``, ``lm``).

    ``seq_len`` applies to ``icll`` and ``lm``; the synthetic tasks size their sequences
    from their lengths.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    if name in ("icll", "lm") and seq_len is not None:
        options["seq_len"] = seq_len
    try:
        return TASKS[name](seed=seed, **options)
    except TypeError as e:
        raise ValueError(f"task {name}: {e}") from None
