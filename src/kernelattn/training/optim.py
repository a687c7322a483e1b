"""AdamW with decay on matrices only, and a cosine schedule with linear warm-up."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..models.common import decay_groups

__all__ = ["make_optimizer", "cosine_lr"]


def cosine_lr(step: int, lr: float, min_lr: float, warmup: int, max_steps: int) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up, then cosine down to ``min_lr``."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                   device_type: str = "cpu") -> torch.optim.AdamW:
    """AdamW with weight decay only on >= 2-D tensors (fused on CUDA)."""
    extra = {"fused": True} if device_type == "cuda" else {}
    return torch.optim.AdamW(decay_groups(model, weight_decay), lr=lr, betas=betas, **extra)
