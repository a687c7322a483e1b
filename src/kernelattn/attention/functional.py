"""``kernel_attention``: SDPA's calling convention, any compact-kernel mapping.

Swapping softmax attention for a compact kernel is a one-line change::

    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out = kernel_attention(q, k, v, is_causal=True, method="entmax15")   # biweight kernel

Shapes follow ``torch.nn.functional.scaled_dot_product_attention``: ``query``
``(B, Hq, Lq, E)``, ``key`` ``(B, Hkv, Lk, E)``, ``value`` ``(B, Hkv, Lk, Ev)`` (or
3-D without the head dim), boolean ``attn_mask`` where ``True`` = attend (a float mask
is added to the scores), ``is_causal`` with SDPA's top-left alignment (query ``i`` sees
keys ``j <= i``), ``scale=None`` meaning ``1/sqrt(E)``. Unlike SDPA, ``attn_mask`` and
``is_causal`` may be combined (e.g. padding + causal), and a query with no admissible
key returns zeros (never NaN) for every mapping, softmax included.

A plain reference implementation (what every backend computes)::

    s = scale * q @ k.transpose(-2, -1)            # (B, Hq, Lq, Lk), k repeated per group
    s = s.masked_fill(~admissible, -inf)            # mask and causal
    p = mapping(s, dim=-1)                          # zero rows stay zero
    out = p @ v
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import (check_bool, check_choice, check_entmax_alpha, check_int, check_number,
                           check_probability, check_same_device)
from ..mappings.fixed import kernel_affine
from ..mappings.registry import Mapping, resolve_mapping
from ..mappings.threshold import softmax_limit
from ._blocked import Geometry, blocked_attention
from ._sparse import SPARSE_BLOCK_ELEMENTS
from .cache import KernelKVCache
from .dispatch import BACKENDS, select_backend

__all__ = ["kernel_attention", "kernel_attention_step", "kernel_mapping", "KERNELS", "KernelKVCache"]

# kernel name -> order n of (1 - u²)_+^n (None = Gaussian, the n → ∞ limit)
KERNELS = {"gaussian": None, "epanechnikov": 1, "biweight": 2, "triweight": 3}
_OPTION_NAMES = {"bias": "bias", "relu_scale": "scale", "temperature": "temperature"}


def kernel_mapping(kernel: str | int, normalization: str = "adaptive", bandwidth: float | None = None) -> Mapping:
    """The kernel view (SPEC §1): a kernel and a normalisation → the attention mapping.

    Args:
        kernel: ``"gaussian"``, ``"epanechnikov"``, ``"biweight"``, ``"triweight"`` or an
            integer ``n >= 1`` for the n-weight kernel ``(1 - u²)_+^n``.
        normalization: ``"adaptive"`` (bandwidth chosen per query so weights sum to one:
            α-entmax with α = 1 + 1/n) or ``"fixed"`` (given bandwidth, weights divided by
            their sum: normalised ReLUⁿ).
        bandwidth: ``h`` for ``"fixed"`` (scores are ``q·k`` of unit vectors, times
            ``scale``); not used by ``"adaptive"``.

    Returns:
        A :class:`~kernelattn.mappings.Mapping` to pass as ``method=``.
    """
    if isinstance(kernel, str):
        key = kernel.strip().lower()
        if key not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; choose one of {sorted(KERNELS)} or an integer n >= 1")
        n = KERNELS[key]
    elif isinstance(kernel, int) and not isinstance(kernel, bool) and kernel >= 1:
        n = kernel
    else:
        raise ValueError(f"kernel must be a name or an integer n >= 1, got {kernel!r}")
    if normalization == "adaptive":
        if bandwidth is not None:
            raise ValueError("adaptive normalisation chooses the bandwidth itself; pass bandwidth only with "
                             "normalization='fixed'")
        if n is None:
            return resolve_mapping("softmax")
        return resolve_mapping(f"entmax:{1 + 1 / n!r}")
    if normalization == "fixed":
        if n is None:
            raise ValueError("the Gaussian kernel with bandwidth h is softmax with scores divided by h²: "
                             "use method='softmax' and scale=scale/h²")
        if bandwidth is None:
            raise ValueError("normalization='fixed' needs bandwidth=h > 0")
        a, b = kernel_affine(bandwidth)
        return resolve_mapping(f"normalized_relu:{n}", scale=a, bias=b)
    raise ValueError(f"normalization must be 'adaptive' or 'fixed', got {normalization!r}")


def _resolve(method, alpha, topk, options) -> tuple[Mapping, Tensor | None]:
    """Mapping for the call, and the per-head α tensor if one was given."""
    unknown = set(options) - set(_OPTION_NAMES)
    if unknown:
        raise ValueError(f"unknown mapping option(s) {sorted(unknown)}; kernel_attention takes "
                         f"{sorted(_OPTION_NAMES)} (relu_scale is normalized_relu's slope: `scale` is SDPA's)")
    if alpha is not None:
        if options or topk is not None:
            raise ValueError("alpha= selects α-entmax; it takes no topk or mapping options")
        alpha = check_entmax_alpha(alpha, None, -1, strict=isinstance(alpha, Tensor))
        if isinstance(alpha, Tensor):
            return Mapping(name="entmax:tensor", kind="entmax", alpha=None), alpha
        return Mapping(name=f"entmax:{alpha:g}", kind="entmax", alpha=alpha), None
    for k, v in options.items():  # finite, and the slope and temperature > 0
        if k == "bias" and isinstance(v, Tensor):
            raise ValueError("bias must be a float in kernel_attention (a tensor bias needs the mapping itself: "
                             "kernelattn.normalized_relu(scores, bias=...))")
        check_number(v, k, positive=k != "bias",
                     hint=" (relu_scale is a = 2/h² for bandwidth h)" if k == "relu_scale" else "")
    opts = {_OPTION_NAMES[k]: v for k, v in options.items()}
    mapping = resolve_mapping(method, topk=topk, **opts)
    allowed = {"normalized_relu": {"scale", "bias"}, "relumax": {"temperature"}}.get(mapping.kind, set())
    ignored = set(opts) - allowed
    if ignored:
        names = sorted(k for k, v in _OPTION_NAMES.items() if v in ignored)
        raise ValueError(f"option(s) {names} do not apply to method {mapping.name!r}")
    if topk is not None and not mapping.kind.startswith("topk"):
        raise ValueError(f"topk applies to the top-k methods only, not {mapping.name!r}")
    return mapping, None


def _check_inputs(query: Tensor, key: Tensor, value: Tensor, enable_gqa: bool) -> None:
    for name, x in (("query", query), ("key", key), ("value", value)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {x.dtype}")
        if x.dim() not in (3, 4):
            raise ValueError(f"{name} must be (batch, heads, length, dim) or (batch, length, dim); "
                             f"got shape {tuple(x.shape)}")
    if not query.dim() == key.dim() == value.dim():
        raise ValueError(f"query, key and value must have the same number of dims; got "
                         f"{query.dim()}, {key.dim()}, {value.dim()}")
    if not query.dtype == key.dtype == value.dtype:
        raise ValueError(f"query, key and value must share a dtype; got {query.dtype}, {key.dtype}, {value.dtype}")
    if not query.device == key.device == value.device:
        raise ValueError("query, key and value must be on the same device")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key head dims differ: {query.shape[-1]} vs {key.shape[-1]}")
    if query.shape[-1] == 0:
        raise ValueError(f"query and key have head dim 0 (shape {tuple(query.shape)}): scores q·k are undefined; "
                         "give them at least one feature")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"key and value lengths differ: {key.shape[-2]} vs {value.shape[-2]}")
    if key.shape[:-2] != value.shape[:-2]:
        raise ValueError(f"key and value batch/head dims differ: {tuple(key.shape[:-2])} vs {tuple(value.shape[:-2])}")
    if query.shape[0] != key.shape[0]:
        raise ValueError(f"query and key batch sizes differ: {query.shape[0]} vs {key.shape[0]}")
    if query.dim() == 4 and query.shape[1] != key.shape[1]:
        hq, hkv = query.shape[1], key.shape[1]
        if hkv == 0:
            raise ValueError(f"key has 0 heads but query has {hq}: give key and value at least one head")
        if not enable_gqa:
            raise ValueError(f"query has {hq} heads and key {hkv}: pass enable_gqa=True for grouped-query attention")
        if hq % hkv:
            raise ValueError(f"grouped-query attention needs query heads ({hq}) divisible by key heads ({hkv})")


def _canonical_mask(attn_mask: Tensor | None, B: int, Hq: int, Lq: int, Lk: int, cdt: torch.dtype,
                    device: torch.device | None = None) -> Tensor | None:
    if attn_mask is None:
        return None
    if not isinstance(attn_mask, Tensor):
        raise ValueError(f"attn_mask must be a tensor, got {type(attn_mask).__name__}")
    if device is not None and attn_mask.device != device:
        raise ValueError(f"attn_mask is on {attn_mask.device} but query is on {device}; "
                         "move it with attn_mask.to(query.device)")
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise ValueError(f"attn_mask must be bool (True = attend) or float (added to scores), got {attn_mask.dtype}")
    if attn_mask.dim() > 4:
        raise ValueError(f"attn_mask has too many dims: {tuple(attn_mask.shape)}")
    m = attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))
    try:
        torch.broadcast_shapes(m.shape, (B, Hq, Lq, Lk))
    except RuntimeError:
        raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to "
                         f"(batch, heads, Lq, Lk) = {(B, Hq, Lq, Lk)}") from None
    if m.is_floating_point():
        if torch.isnan(m).any() or torch.isposinf(m).any():
            raise ValueError("a float attn_mask must be finite or -inf")
        m = m.to(cdt)
    return m


def _sdpa(query, key, value, mask, causal_offset, scale, enable_gqa, dropout_p):
    """Softmax through PyTorch's fused kernel, with zero rows where no key is admissible."""
    Lq, Lk = query.shape[-2], key.shape[-2]
    is_causal = causal_offset == 0 and mask is None
    if causal_offset is not None and not is_causal:
        tri = torch.ones(Lq, Lk, dtype=torch.bool, device=query.device).tril(diagonal=causal_offset)
        if mask is None:
            mask = tri
        elif mask.dtype == torch.bool:
            mask = mask & tri
        else:
            mask = mask.masked_fill(~tri, float("-inf"))
    dead = None
    if mask is not None:
        dead = ~mask.any(dim=-1, keepdim=True) if mask.dtype == torch.bool else \
            torch.isneginf(mask).all(dim=-1, keepdim=True)
        if bool(dead.any()):
            mask = mask | dead if mask.dtype == torch.bool else mask.masked_fill(dead, 0.0)
        else:
            dead = None
        if mask.dtype != torch.bool:
            mask = mask.to(query.dtype)
        if query.dim() == 3:
            mask = mask.squeeze(0)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p,
                                         is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    if dead is not None:
        out = out.masked_fill(dead.squeeze(0) if query.dim() == 3 else dead, 0.0)
    return out


def _adasplash(query, key, value, alpha, causal_offset, scale):
    from adasplash import adasplash  # only reached on CUDA with the package installed

    d = query.shape[-1]
    if abs(scale * math.sqrt(d) - 1.0) > 1e-12:
        query = query * (scale * math.sqrt(d))  # adasplash scales scores by 1/sqrt(d) itself
    return adasplash(query, key, value, alpha=float(alpha), is_causal=causal_offset == 0)


def _visible_mean(value: Tensor, mask: Tensor | None, causal_offset: int | None, Hq: int, Lq: int) -> Tensor:
    """Mean of the values each query may see, ``(B, Hq, Lq, Dv)``; zeros where it sees none.

    The uniform fallback of ``normalized_relu_paper`` on a row with an empty support.
    ``value`` is ``(B, Hkv, Lk, Dv)``. Under the causal mask alone this is a prefix mean
    (memory linear in length); an explicit ``mask`` is already ``Lq × Lk``, so the
    masked mean uses it directly.
    """
    B, Hkv, Lk, Dv = value.shape
    v = value.repeat_interleave(Hq // Hkv, dim=1) if Hq != Hkv else value  # (B, Hq, Lk, Dv)
    if mask is None:
        rows = torch.arange(Lq, device=v.device)
        counts = torch.full_like(rows, Lk) if causal_offset is None else (rows + causal_offset + 1).clamp(0, Lk)
        prefix = torch.cat([v.new_zeros(B, Hq, 1, Dv), v.cumsum(2)], dim=2)  # prefix[n] = sum of the first n
        return prefix[:, :, counts] / counts.clamp_min(1).to(v.dtype).view(Lq, 1)
    vis = mask if mask.dtype == torch.bool else ~torch.isneginf(mask)
    if causal_offset is not None:
        vis = vis & torch.ones(Lq, Lk, dtype=torch.bool, device=v.device).tril(diagonal=causal_offset)
    vis = vis.expand(B, Hq, Lq, Lk).to(v.dtype)
    return (vis @ v) / vis.sum(-1, keepdim=True).clamp_min(1)


def _attention(query, key, value, attn_mask, causal_offset, scale, enable_gqa, method, alpha, topk,
               backend, block_size, return_support, dropout_p, options):
    _check_inputs(query, key, value, enable_gqa)
    check_bool(enable_gqa, "enable_gqa")
    check_bool(return_support, "return_support")
    check_choice(backend, "backend", BACKENDS)
    dropout_p = check_probability(dropout_p, "dropout_p", " (the probability of zeroing an attention weight)")
    if scale is not None:
        scale = check_number(scale, "scale", hint=" (the score scale; None means 1/sqrt(E))")
        if scale == 0:
            raise ValueError("scale must be nonzero: every score would be 0 and the kernel would not depend on the "
                             "query (None means 1/sqrt(E))")
    if block_size is not None:
        block_size = check_int(block_size, "block_size", minimum=1, hint=" (query rows per block)")
    if causal_offset is not None and causal_offset >= key.shape[-2] - 1:
        causal_offset = None  # every query already sees every key
    mapping, alpha_t = _resolve(method, alpha, topk, options)
    if alpha_t is None and mapping.kind == "entmax" and mapping.alpha != 1.0 and backend != "sparse" and softmax_limit(
            mapping.alpha - 1.0, torch.float64 if query.dtype == torch.float64 else torch.float32):
        mapping = resolve_mapping("softmax")  # equal to float rounding (see mappings.threshold.softmax_limit)
    squeeze = query.dim() == 3
    if query.numel() == 0 or value.shape[-1] == 0 or key.shape[-2] == 0:
        # nothing to attend with or to: an empty output, or zeros for queries with no key
        _canonical_mask(attn_mask, *(query.shape[:2] if not squeeze else (1, query.shape[0])), query.shape[-2],
                        key.shape[-2], query.dtype, query.device)
        shape = query.shape[:-1] + (value.shape[-1],)
        out = query.new_zeros(shape) + 0 * query.sum() + 0 * key.sum() + 0 * value.sum()  # keeps the graph
        if return_support:
            return out, torch.zeros(query.shape[:-1], dtype=torch.int64, device=query.device)
        return out
    q4, k4, v4 = (x.unsqueeze(0) for x in (query, key, value)) if squeeze else (query, key, value)
    B, Hq, Lq, D = q4.shape
    Hkv, Lk, Dv = k4.shape[1], k4.shape[2], v4.shape[3]
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    scale = float(scale)
    cdt = torch.float64 if query.dtype == torch.float64 else torch.float32
    if cdt != torch.float64 and mapping.kind == "entmax" and (
            bool((alpha_t.detach() > 2).any()) if alpha_t is not None else mapping.alpha > 2):
        # α > 2: a weight u^{1/(α-1)} at the support's edge hinges on offsets below float32's
        # resolution of the threshold ((8·eps)^{1/(α-1)} ≈ 0.2 at α = 10), so these rare
        # mappings are solved in float64 and the output cast back
        cdt = torch.float64
    mask = _canonical_mask(attn_mask, B, Hq, Lq, Lk, cdt, query.device)
    if alpha_t is not None:
        a = alpha_t
        ok = a.dim() == 0 or (a.dim() == 1 and a.numel() in (1, Hq)) or (
            a.dim() == 4 and a.shape[2:] == (1, 1) and a.shape[0] in (1, B) and a.shape[1] in (1, Hq))
        if not ok:
            raise ValueError(f"a tensor alpha must be a scalar, (heads,) or (1|batch, 1|heads, 1, 1); "
                             f"got shape {tuple(a.shape)} for {Hq} heads")
    is_softmax = alpha_t is None and mapping.is_softmax
    if dropout_p and not is_softmax:
        raise ValueError("dropout_p > 0 is supported for softmax (through SDPA) only")
    entmax_alpha = alpha_t if alpha_t is not None else (mapping.alpha if mapping.kind == "entmax" else None)
    fixed_support = (mapping.kind == "normalized_relu" and not isinstance(mapping.bias, Tensor)
                     and not isinstance(mapping.scale, Tensor) and mapping.scale > 0)
    name = select_backend(query, key, value, is_softmax=is_softmax, alpha=entmax_alpha, attn_mask=attn_mask,
                          causal_offset=causal_offset, return_support=return_support, backend=backend,
                          fixed_support=fixed_support)
    if dropout_p and name != "sdpa":
        raise ValueError("dropout_p > 0 needs the sdpa backend")
    if name == "sdpa" and backend == "auto" and not dropout_p and bool(
            torch.isnan(query).any() | torch.isnan(key).any()):
        # PyTorch's fused kernel can turn a NaN row into a finite 0; the blocked path keeps
        # the NaN in exactly the rows it touches (the documented policy). Two cheap
        # reductions, O((Lq + Lk)·E) next to the O(Lq·Lk·E) attention.
        name = select_backend(query, key, value, is_softmax=True, backend="blocked")
    if name == "sdpa":
        return _sdpa(query, key, value, mask, causal_offset, scale, enable_gqa, dropout_p)
    if name == "adasplash":
        return _adasplash(query, key, value, mapping.alpha, causal_offset, scale)

    geo = Geometry(B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, D=D, Dv=Dv, causal_offset=causal_offset, mask=mask)
    geo.plan(block_size, SPARSE_BLOCK_ELEMENTS if name == "sparse" else None)
    G = Hq // Hkv
    q5 = (q4.to(cdt) * scale).contiguous().view(B, Hkv, G, Lq, D)
    k3 = k4.to(cdt).reshape(B * Hkv, Lk, D)
    v3 = v4.to(cdt).reshape(B * Hkv, Lk, Dv)
    if alpha_t is not None:
        alpha_t = alpha_t.reshape(1, -1, 1, 1) if alpha_t.dim() <= 1 else alpha_t
        alpha_arg = alpha_t.expand(B, Hq, 1, 1) if alpha_t.shape[:2] != (B, Hq) else alpha_t
    else:
        alpha_arg = None
    uniform_empty = mapping.kind == "normalized_relu" and mapping.empty == "uniform"
    out5, support = blocked_attention(q5, k3, v3, geo, mapping, alpha_arg, return_support or uniform_empty,
                                      sparse=name == "sparse")
    out = out5.view(B, Hq, Lq, Dv)
    if uniform_empty:
        # Rows whose support is empty (a NaN row keeps its NaN) take the mean of the values they may see.
        empty = ((support.view(B, Hq, Lq) == 0) & ~out.isnan().any(-1)).unsqueeze(-1)
        out = torch.where(empty, _visible_mean(v4.to(cdt), mask, causal_offset, Hq, Lq), out)
        support = support if return_support else None
    out = out.to(query.dtype)
    if squeeze:
        out = out.squeeze(0)
        support = support.squeeze(0) if support is not None else None
    return (out, support) if return_support else out


def kernel_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                     is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False, *,
                     method: str | Mapping = "entmax15", alpha: float | Tensor | None = None,
                     topk: int | None = None, backend: str = "auto", block_size: int | None = None,
                     return_support: bool = False, dropout_p: float = 0.0, **mapping_options):
    """Attention with a compact-kernel (or any registry) mapping, in memory linear in length.

    Args:
        query: ``(B, Hq, Lq, E)`` (or ``(B, Lq, E)``).
        key: ``(B, Hkv, Lk, E)``.
        value: ``(B, Hkv, Lk, Ev)``.
        attn_mask: bool (True = attend) or float (added to scores), broadcastable to
            ``(B, Hq, Lq, Lk)``; may be combined with ``is_causal``.
        is_causal: query ``i`` attends to keys ``j <= i`` (SDPA's top-left alignment).
        scale: score scale; ``None`` = ``1/sqrt(E)``.
        enable_gqa: allow ``Hq`` to be a multiple of ``Hkv`` (query head ``h`` uses key
            head ``h // (Hq/Hkv)``).
        method: mapping name (``softmax``/``gaussian``, ``sparsemax``/``epanechnikov``,
            ``entmax15``/``biweight``, ``entmax43``/``triweight``, ``entmax:<α>``,
            ``normalized_relu[:<n>]``, ``relumax``, ``topk_softmax``, ``topk_uniform``,
            ``normalized_relu_paper``: ``relu(s)/Σ`` with uniform weights over the
            admissible keys on a row with an empty support) or a
            :class:`~kernelattn.mappings.Mapping` (e.g. from :func:`kernel_mapping`).
        alpha: α-entmax with this α instead of ``method``: a float >= 1, or a tensor > 1
            shaped ``()``, ``(Hq,)`` or ``(1|B, 1|Hq, 1, 1)``; a tensor that requires grad
            receives one.
        topk: ``k`` for the top-k methods.
        backend: ``"auto"``, ``"sdpa"`` (softmax only), ``"adasplash"`` (CUDA),
            ``"sparse"`` (ours, α-entmax, work on the support) or ``"blocked"`` (ours, any
            mapping, dense blocks); see :func:`select_backend`/:func:`last_backend`.
        block_size: query rows per block on the blocked path (default: sized so a
            block holds about 2^20 scores).
        return_support: also return the support size (number of keys with non-zero
            weight) per query and head, int64 ``(B, Hq, Lq)``.
        dropout_p: attention dropout, softmax through SDPA only.
        **mapping_options: ``bias`` and ``relu_scale`` (normalized_relu's ``b`` and
            ``a``), ``temperature`` (relumax).

    Returns:
        ``out`` ``(B, Hq, Lq, Ev)`` in ``query``'s dtype, or ``(out, support)``. Queries
        with no admissible key get zeros.
    """
    check_bool(is_causal, "is_causal")
    return _attention(query, key, value, attn_mask, 0 if is_causal else None, scale, enable_gqa, method,
                      alpha, topk, backend, block_size, return_support, dropout_p, mapping_options)


def kernel_attention_step(query: Tensor, key_cache: Tensor | KernelKVCache, value_cache: Tensor | None = None,
                          attn_mask: Tensor | None = None, scale: float | None = None,
                          enable_gqa: bool = False, *, method: str | Mapping = "entmax15",
                          alpha: float | Tensor | None = None, topk: int | None = None,
                          backend: str = "auto", block_size: int | None = None,
                          return_support: bool = False, **mapping_options):
    """Incremental decoding: the newest ``Lq`` queries against a key/value cache.

    The cache holds the keys and values of every position so far, *including* the
    ``Lq`` new ones (append first, then attend). Query ``i`` sits at position
    ``Lk - Lq + i`` and attends to keys ``j <= Lk - Lq + i`` (bottom-right causal
    alignment), so stepping token by token reproduces the rows of
    ``kernel_attention(..., is_causal=True)`` on the whole sequence.

    With a :class:`KernelKVCache` in place of the two tensors, a one-query step of an
    α-entmax method (float α, no gradient needed) reads only the cache pages whose key
    bound can clear the threshold — exactly the same result, certified (see
    :mod:`kernelattn.attention.cache`); other calls read the whole cache.

    Args:
        query: ``(B, Hq, Lq, E)``, usually ``Lq = 1``.
        key_cache, value_cache: ``(B, Hkv, Lk, E)`` / ``(B, Hkv, Lk, Ev)``, ``Lk >= Lq``;
            or a :class:`KernelKVCache` and ``value_cache=None``.
        attn_mask: extra mask broadcastable to ``(B, Hq, Lq, Lk)`` (e.g. left padding).
        Other arguments as in :func:`kernel_attention`.

    Returns:
        As :func:`kernel_attention`.
    """
    if isinstance(key_cache, KernelKVCache):
        if value_cache is not None:
            raise ValueError("pass value_cache=None with a KernelKVCache (it holds the values)")
        cache = key_cache
        paged = _paged_step(cache, query, attn_mask, scale, enable_gqa, method, alpha, topk, backend, block_size,
                            mapping_options)
        if paged is not None:
            out, support = paged
            return (out, support) if return_support else out
        key_cache, value_cache = cache.keys, cache.values
    elif value_cache is None:
        raise ValueError("value_cache is required (or pass a KernelKVCache as key_cache)")
    Lq, Lk = query.shape[-2], key_cache.shape[-2]
    if Lk < Lq:
        raise ValueError(f"the cache ({Lk} positions) must already contain the {Lq} new positions")
    return _attention(query, key_cache, value_cache, attn_mask, Lk - Lq, scale, enable_gqa, method, alpha, topk,
                      backend, block_size, return_support, 0.0, mapping_options)


def _paged_step(cache: KernelKVCache, query, attn_mask, scale, enable_gqa, method, alpha, topk, backend,
                block_size, options):
    """The page-skipping decoding step, or ``None`` where it does not apply."""
    if not isinstance(query, Tensor) or query.dim() != 4 or query.shape[2] != 1 or backend not in ("auto", "sparse"):
        return None
    if len(cache) == 0:
        raise ValueError("the KernelKVCache is empty: append the new position's key and value first")
    if torch.is_grad_enabled() and query.requires_grad:
        return None  # decoding with gradients goes through the differentiable path
    _check_inputs(query, cache.keys, cache.values, enable_gqa)
    mapping, alpha_t = _resolve(method, alpha, topk, options)
    if alpha_t is not None or mapping.kind != "entmax" or mapping.alpha <= 1.0 or \
            softmax_limit(mapping.alpha - 1.0, torch.float32):
        return None
    B, Hq, _, E = query.shape
    key_mask = None
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor) or attn_mask.dtype != torch.bool:
            return None
        m = _canonical_mask(attn_mask, B, Hq, 1, len(cache), torch.float32, query.device)
        key_mask = m.expand(B, Hq, 1, len(cache))[:, :, 0]
    scale = 1.0 / math.sqrt(E) if scale is None else float(scale)
    from .cache import paged_entmax_step

    select_backend(query, cache.keys, cache.values, is_softmax=False, alpha=mapping.alpha, backend="sparse")
    res = paged_entmax_step(cache, query[:, :, 0], float(mapping.alpha), scale, key_mask)
    if res is None:
        return None
    out, support, _ = res
    return out.unsqueeze(2).to(query.dtype), support.unsqueeze(2)
