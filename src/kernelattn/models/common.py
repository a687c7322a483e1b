"""Pieces shared by the models: method validation, bias-free LayerNorm, weight decay groups."""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_token_ids
from ..mappings import resolve_mapping

__all__ = ["check_common", "check_model_inputs", "LayerNorm", "decay_groups"]

IGNORE_INDEX = -100  # targets to skip in the loss, as in F.cross_entropy


def check_model_inputs(idx, targets, vocab_size: int) -> None:
    """``idx`` ``(B, T)`` token ids in ``[0, vocab_size)``; ``targets`` the same shape, ids or -100.

    Skipped while ``torch.compile`` traces the model: the check reads the ids' min and max
    on the host, which would break the graph.
    """
    if torch.compiler.is_compiling():
        return
    check_token_ids(idx, "idx", vocab_size)
    if idx.dim() != 2:
        raise ValueError(f"idx must be (batch, time) token ids, got shape {tuple(idx.shape)}; use idx[None] for "
                         f"one sequence")
    if targets is not None:
        check_token_ids(targets, "targets", vocab_size, ignore_index=IGNORE_INDEX)
        if targets.shape != idx.shape:
            raise ValueError(f"targets must have idx's shape {tuple(idx.shape)}, got {tuple(targets.shape)}")


def check_common(cfg) -> None:
    """Validate the fields both configs share; errors name the field."""
    for name in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if cfg.n_embd % cfg.n_head:
        raise ValueError(f"n_embd={cfg.n_embd} must be divisible by n_head={cfg.n_head}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout}")
    try:
        resolve_mapping(cfg.method, topk=cfg.topk)
    except ValueError as e:
        raise ValueError(f"method: {e}") from None


def LayerNorm(n: int) -> nn.LayerNorm:
    """LayerNorm without bias (SPEC §3)."""
    return nn.LayerNorm(n, bias=False)


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: decay on tensors with >= 2 dims only (matrices, embeddings)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
