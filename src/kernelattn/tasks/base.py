"""The task interface: data for training plus the task's own metrics.

A task is a :class:`~kernelattn.data.BatchSource` (``sample`` gives training/validation
batches with ``IGNORE`` on positions that carry no loss) that also knows how to score a
model: ``evaluate`` returns a few scalars for periodic logging during training, and
``final_metrics`` returns the records the experiment table is built from.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["Task", "Record", "pad_batch"]

#: one result row: {"metric": str, "value": float} plus optional "length" / "train_size"
Record = dict


@runtime_checkable
class Task(Protocol):
    name: str
    vocab_size: int
    seq_len: int

    def sample(self, split: str, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Inputs ``(n, seq_len)`` int64 and targets ``(n, seq_len)`` (``-100`` = no loss)."""
        ...

    def evaluate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """Cheap in-distribution metrics for periodic logging (model is in eval mode)."""
        ...

    def final_metrics(self, model: torch.nn.Module, device: torch.device) -> list[Record]:
        """The task's result records (in- and out-of-distribution), for the experiment table."""
        ...


def pad_batch(seqs: list[list[int]], targets: list[list[int]], length: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad token lists to ``length``: inputs with ``pad_id``, targets with -100."""
    x = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    y = torch.full((len(seqs), length), -100, dtype=torch.long)
    for i, (s, t) in enumerate(zip(seqs, targets)):
        if len(s) > length:
            raise ValueError(f"sequence of length {len(s)} does not fit seq_len={length}")
        x[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        y[i, :len(t)] = torch.tensor(t, dtype=torch.long)
    return x, y
