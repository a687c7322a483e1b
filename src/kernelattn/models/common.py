"""Pieces shared by the models: method validation, bias-free LayerNorm, weight decay groups."""

from __future__ import annotations

from torch import nn

from ..mappings import resolve_mapping

__all__ = ["check_common", "LayerNorm", "decay_groups"]


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
