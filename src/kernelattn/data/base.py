"""The data interface the training engine consumes.

A source samples whole batches from a ``torch.Generator``; the engine seeds that
generator from ``(seed, split, step, micro-step)``, so the data position *is* the step
counter: resuming at step s replays exactly what an uninterrupted run would have seen,
and every process of a distributed run can draw the same global batch and keep its
own shard.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["BatchSource", "step_generator", "IGNORE"]

#: target id that contributes no loss (prompt positions, padding)
IGNORE = -100


@runtime_checkable
class BatchSource(Protocol):
    """Anything that can sample ``(inputs, targets)`` token batches.

    Attributes:
        vocab_size: number of token ids.
        seq_len: length T of the sequences it returns.
    """

    vocab_size: int
    seq_len: int

    def sample(self, split: str, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` sequences: inputs ``(n, T)`` int64 and targets ``(n, T)`` (``IGNORE`` = no loss)."""
        ...


def step_generator(seed: int, split: str, step: int, micro: int = 0) -> torch.Generator:
    """A CPU generator seeded deterministically from its arguments."""
    h = hashlib.blake2b(f"{seed}/{split}/{step}/{micro}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(h, "little") & ((1 << 63) - 1))
