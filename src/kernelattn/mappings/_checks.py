"""Argument validation shared by every mapping.

Errors name the offending argument and say how to fix it, because these functions sit
deep inside users' models where a bare index error is hard to trace back.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_scores(x: Tensor, dim: int, name: str = "x") -> int:
    """Validate a score tensor and return ``dim`` made non-negative.

    Raises ``ValueError`` for a non-tensor, a non-floating dtype, a ``dim`` out of range,
    or NaN entries (``-inf`` is allowed and means "masked").
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; cast it with .float()")
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim={dim} is out of range for {name} with {x.dim()} dimensions "
                         f"(valid: {-x.dim()} .. {x.dim() - 1})")
    if x.numel():
        # One reduction finds both: max propagates NaN, and is +inf iff some entry is.
        top = x.detach().amax()
        if torch.isnan(top):
            raise ValueError(f"{name} contains NaN scores; use -inf to mask entries instead")
        if torch.isposinf(top):
            raise ValueError(f"{name} contains +inf scores; scores must be finite or -inf (masked)")
    return dim % x.dim()


def check_alpha(alpha, x: Tensor, dim: int) -> float | Tensor:
    """Validate ``alpha`` (float >= 1, or a tensor broadcastable to ``x`` with size 1 on ``dim``)."""
    if isinstance(alpha, Tensor):
        if not alpha.is_floating_point():
            raise ValueError(f"alpha must be a floating-point tensor, got dtype {alpha.dtype}")
        if torch.isnan(alpha).any() or (alpha < 1).any():
            raise ValueError(f"alpha must be >= 1 everywhere (1 = softmax, 2 = sparsemax); "
                             f"got min {alpha.min().item():.4g}")
        if alpha.dim() > 0:
            if alpha.dim() != x.dim():
                raise ValueError(f"alpha tensor must have as many dimensions as x ({x.dim()}), with size 1 "
                                 f"on dim={dim}; got shape {tuple(alpha.shape)}")
            if alpha.shape[dim] != 1:
                raise ValueError(f"alpha tensor must have size 1 on the reduced dim={dim}; got shape "
                                 f"{tuple(alpha.shape)}")
            try:
                torch.broadcast_shapes(alpha.shape, x.shape)
            except RuntimeError:
                raise ValueError(f"alpha of shape {tuple(alpha.shape)} does not broadcast against x of shape "
                                 f"{tuple(x.shape)}") from None
        return alpha
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a float or a tensor, got {type(alpha).__name__}") from None
    if not a >= 1.0:  # also rejects NaN
        raise ValueError(f"alpha must be >= 1 (1 = softmax, 2 = sparsemax), got {alpha}")
    return a


def check_positive_int(value, name: str, hint: str = "") -> int:
    """Validate an integer argument that must be >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) and not (
        isinstance(value, float) and float(value).is_integer()
    ):
        raise ValueError(f"{name} must be a positive integer, got {value!r}{hint}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}{hint}")
    return value


def compute_dtype(x: Tensor) -> torch.dtype:
    """Half-precision scores are solved in float32; float64 stays float64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32
