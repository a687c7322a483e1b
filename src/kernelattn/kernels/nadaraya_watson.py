"""Nadaraya–Watson kernel regression under fixed or adaptive normalisation."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..mappings import entmax, masked_softmax
from .kernels import Kernel, get_kernel

__all__ = ["nadaraya_watson", "nadaraya_watson_weights"]


def _as_points(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if x.dim() == 1:
        return x[:, None]
    if x.dim() != 2:
        raise ValueError(f"{name} must be (N,) or (N, d); got shape {tuple(x.shape)}")
    return x


def nadaraya_watson_weights(
    query: Tensor,
    keys: Tensor,
    kernel: str | Kernel = "epanechnikov",
    bandwidth: float = 1.0,
    normalization: Literal["fixed", "adaptive"] = "fixed",
) -> Tensor:
    """Weights ``w[q, j]`` of the Nadaraya–Watson estimator (rows sum to 1, or 0 if empty).

    * ``fixed``: ``w_j ∝ K(||q - k_j|| / h)``. A query with no key inside a compact
      kernel's support gets an all-zero row (the estimate there is defined as 0).
    * ``adaptive``: ``w = α-entmax(z)`` with ``z_j = -||q - k_j||² / (2h²)`` and
      ``α = 1 + 1/n`` — the n-weight kernel whose bandwidth is chosen per query so the
      weights sum to one (never empty). For the Gaussian both are ``softmax(z)``.

    Args:
        query: ``(Q,)`` or ``(Q, d)`` query points.
        keys: ``(N,)`` or ``(N, d)`` key points.
        kernel: a :class:`Kernel` or its name.
        bandwidth: ``h > 0``.
        normalization: ``"fixed"`` or ``"adaptive"``.

    Returns:
        ``(Q, N)`` weights in the query's dtype.
    """
    kern = get_kernel(kernel)
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    if normalization not in ("fixed", "adaptive"):
        raise ValueError(f"normalization must be 'fixed' or 'adaptive', got {normalization!r}")
    q = _as_points(query, "query")
    k = _as_points(keys, "keys").to(q.dtype)
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"query and keys must have the same dimension d; got {q.shape[1]} and {k.shape[1]}")
    if k.shape[0] == 0:
        raise ValueError("keys is empty: Nadaraya-Watson needs at least one key")
    d2 = torch.cdist(q, k).square()  # (Q, N)
    if normalization == "fixed":
        w = kern.profile(d2 / bandwidth ** 2)
        s = w.sum(dim=-1, keepdim=True)
        return w / torch.where(s > 0, s, torch.ones_like(s))
    z = -d2 / (2 * bandwidth ** 2)
    if kern.alpha == 1.0:
        return masked_softmax(z, -1)
    return entmax(z, kern.alpha, -1)


def nadaraya_watson(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    kernel: str | Kernel = "epanechnikov",
    bandwidth: float = 1.0,
    normalization: Literal["fixed", "adaptive"] = "fixed",
) -> Tensor:
    """Nadaraya–Watson estimate ``f(q) = Σ_j w_j(q) v_j`` (see :func:`nadaraya_watson_weights`).

    Args:
        query: ``(Q,)`` or ``(Q, d)``.
        keys: ``(N,)`` or ``(N, d)``.
        values: ``(N,)`` or ``(N, dv)``.
        kernel, bandwidth, normalization: as in :func:`nadaraya_watson_weights`.

    Returns:
        ``(Q,)`` if ``values`` is 1-D, else ``(Q, dv)``.
    """
    v = values if isinstance(values, Tensor) else torch.as_tensor(values)
    if v.shape[0] != (keys.shape[0] if isinstance(keys, Tensor) else len(keys)):
        raise ValueError(f"values must have one row per key; got {v.shape[0]} values for "
                         f"{keys.shape[0]} keys")
    w = nadaraya_watson_weights(query, keys, kernel, bandwidth, normalization)
    v = v.to(w.dtype)
    return w @ v
