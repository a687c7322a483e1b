"""Top-k baselines: softmax or uniform weights on the k largest scores, zero elsewhere.

Ties at the k-th score are broken by ``torch.topk`` (an arbitrary but deterministic
choice). Masked (``-inf``) entries never receive weight even when a row has fewer than
k unmasked entries; a fully masked row returns zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_int, check_scores
from .entmax import masked_softmax

__all__ = ["topk_softmax", "topk_uniform", "topk_mask", "TopkSoftmax", "TopkUniform"]


def topk_mask(x: Tensor, k: int, dim: int) -> Tensor:
    """Boolean mask of the ``k`` largest finite entries along ``dim`` (no checks)."""
    k = min(k, x.shape[dim])
    idx = x.topk(k, dim=dim).indices
    keep = torch.zeros_like(x, dtype=torch.bool).scatter_(dim, idx, True)
    return keep & ~torch.isneginf(x)


def topk_softmax(x: Tensor, k: int, dim: int = -1) -> Tensor:
    """Softmax over the ``k`` largest scores, zero elsewhere.

    Args:
        x: scores of any shape; ``-inf`` = masked.
        k: number of entries kept (>= 1); ``k >= x.shape[dim]`` is plain softmax.
        dim: dimension to normalise over.

    Returns:
        Tensor of ``x``'s shape and dtype.
    """
    dim = check_scores(x, dim)
    k = check_int(k, "k", minimum=1, hint=" (how many entries to keep)")
    if x.shape[dim] == 0:
        return x * 0  # nothing to normalise over (as torch.softmax)
    keep = topk_mask(x.detach(), k, dim)
    return masked_softmax(x.masked_fill(~keep, float("-inf")), dim)


def topk_uniform(x: Tensor, k: int, dim: int = -1) -> Tensor:
    """Uniform weight ``1/|S|`` on the ``k`` largest (unmasked) scores ``S``.

    Piecewise constant in ``x``, so it passes no gradient to the scores.

    Args:
        x: scores of any shape; ``-inf`` = masked.
        k: number of entries kept (>= 1).
        dim: dimension to normalise over.

    Returns:
        Tensor of ``x``'s shape and dtype.
    """
    dim = check_scores(x, dim)
    k = check_int(k, "k", minimum=1, hint=" (how many entries to keep)")
    if x.shape[dim] == 0:
        return x * 0  # nothing to normalise over (as torch.softmax)
    keep = topk_mask(x.detach(), k, dim).to(x.dtype)
    cnt = keep.sum(dim=dim, keepdim=True)
    return keep / torch.where(cnt > 0, cnt, torch.ones_like(cnt))


class TopkSoftmax(nn.Module):
    """Module form of :func:`topk_softmax`."""

    def __init__(self, k: int, dim: int = -1):
        super().__init__()
        self.k, self.dim = k, dim

    def forward(self, x: Tensor) -> Tensor:
        return topk_softmax(x, self.k, self.dim)


class TopkUniform(nn.Module):
    """Module form of :func:`topk_uniform`."""

    def __init__(self, k: int, dim: int = -1):
        super().__init__()
        self.k, self.dim = k, dim

    def forward(self, x: Tensor) -> Tensor:
        return topk_uniform(x, self.k, self.dim)
