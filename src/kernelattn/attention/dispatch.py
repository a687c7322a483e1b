"""Backend choice for :func:`kernel_attention`, made visible.

Four backends:

* ``"sdpa"`` — PyTorch's fused ``scaled_dot_product_attention``; softmax only.
* ``"adasplash"`` — the ``adasplash`` package's Triton α-entmax flash attention; CUDA
  only, when installed, and only for calls it supports (float α in (1, 2], no explicit
  mask, equal query/key lengths, no grouped-query heads, head dim 16/32/64/128).
* ``"sparse"`` — our support-restricted path (:mod:`._sparse`) for α-entmax (float or
  tensor α) and normalised ReLUⁿ: threshold search, products and backward on the
  support only, block by block where the support is small, falling back to the dense
  blocked path per block where it is not; any device.
* ``"blocked"`` — our dense exact path (:mod:`._blocked`), any mapping, any device; the
  reference the sparse path is tested against.

``backend="auto"`` takes the first that applies in that order (softmax → sdpa, except
when support sizes are requested; α-entmax → adasplash where it can, else sparse). The decision is logged at DEBUG level on the
``kernelattn.attention`` logger and :func:`last_backend` returns the latest one.
"""

from __future__ import annotations

import importlib.util
import logging

from torch import Tensor

__all__ = ["BACKENDS", "select_backend", "last_backend", "adasplash_available"]

logger = logging.getLogger("kernelattn.attention")

BACKENDS = ("auto", "sdpa", "adasplash", "sparse", "blocked")
_last: list[str | None] = [None]


def adasplash_available() -> bool:
    """Whether the ``adasplash`` package can be imported (it only runs on CUDA)."""
    return importlib.util.find_spec("adasplash") is not None


def last_backend() -> str | None:
    """Name of the backend that the most recent attention call ran on (``None`` before any)."""
    return _last[0]


def _record(name: str, reason: str) -> str:
    _last[0] = name
    logger.debug("kernel_attention backend=%s (%s)", name, reason)
    return name


def _adasplash_refusal(query: Tensor, key: Tensor, value: Tensor, *, alpha, attn_mask, causal_offset,
                       return_support: bool) -> str | None:
    """Why adasplash cannot take this call, or ``None`` if it can."""
    if not query.is_cuda:
        return "adasplash needs CUDA tensors"
    if not adasplash_available():
        return "the adasplash package is not installed"
    if isinstance(alpha, Tensor) or alpha is None or not 1.0 < float(alpha) <= 2.0:
        return "adasplash takes a float alpha in (1, 2]"
    if attn_mask is not None:
        return "adasplash takes no explicit attn_mask"
    if causal_offset not in (None, 0) or query.shape[-2] != key.shape[-2]:
        return "adasplash needs equal query and key lengths"
    if query.shape[-3] != key.shape[-3]:
        return "adasplash has no grouped-query heads here"
    if query.shape[-1] not in (16, 32, 64, 128) or value.shape[-1] != query.shape[-1]:
        return "adasplash needs head dim 16/32/64/128 for queries and values"
    if return_support:
        return "adasplash does not report support sizes"
    return None


def select_backend(query: Tensor, key: Tensor, value: Tensor, *, is_softmax: bool, alpha=None,
                   attn_mask: Tensor | None = None, causal_offset: int | None = None,
                   return_support: bool = False, backend: str = "auto", fixed_support: bool = False) -> str:
    """Choose the backend for a call (and record it for :func:`last_backend`).

    Args:
        query, key, value: the call's tensors (only shapes and device are read).
        is_softmax: the mapping is softmax (α = 1, float).
        alpha: the α-entmax α of the call (float or tensor), ``None`` for other mappings.
        attn_mask: the call's mask, if any.
        causal_offset: ``None`` (no causal mask) or the diagonal offset.
        return_support: support sizes requested.
        backend: ``"auto"`` or a backend name to force.
        fixed_support: the mapping's support is a known score threshold (normalised ReLUⁿ
            with a positive slope), which the sparse path also serves.

    Raises:
        ValueError: unknown backend, or a forced backend that cannot run the call.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "sdpa":
        if not is_softmax:
            raise ValueError("backend='sdpa' runs softmax only; use backend='blocked' (or 'auto') for this mapping")
        if return_support:
            raise ValueError("backend='sdpa' cannot return support sizes; use backend='blocked'")
        return _record("sdpa", "forced")
    if backend == "adasplash":
        why = _adasplash_refusal(query, key, value, alpha=alpha, attn_mask=attn_mask,
                                 causal_offset=causal_offset, return_support=return_support)
        if why is not None:
            raise ValueError(f"backend='adasplash' cannot run this call: {why}")
        return _record("adasplash", "forced")
    if backend == "sparse":
        if (alpha is None or is_softmax) and not fixed_support:
            raise ValueError("backend='sparse' runs α-entmax (α > 1) and normalised ReLU only; use "
                             "backend='blocked' (or 'auto') for this mapping")
        return _record("sparse", "forced")
    if backend == "blocked":
        return _record("blocked", "forced")
    if is_softmax and not return_support:
        return _record("sdpa", "softmax goes to PyTorch's fused kernel")
    if not is_softmax and alpha is not None:
        why = _adasplash_refusal(query, key, value, alpha=alpha, attn_mask=attn_mask,
                                 causal_offset=causal_offset, return_support=return_support)
        if why is None:
            return _record("adasplash", "CUDA α-entmax supported by adasplash")
        return _record("sparse", why)
    if fixed_support:
        return _record("sparse", "normalised ReLU: fixed support threshold")
    return _record("blocked", "exact blocked kernel attention")
