"""A key/value cache for decoding whose pages carry key bounds: certified-exact sparse decoding.

A compact kernel gives zero weight to every key scoring at or below the threshold τ. The
cache keeps, for each page of ``page_size`` consecutive keys, a bound on the best score
any query can get from it — the smaller of a box bound (per-dimension min/max:
``q⁺·max + q⁻·min``) and a ball bound (centroid and radius: ``q·c + ||q||·r``). A
decoding step then

1. scores the pages' bounds (a few numbers per page instead of ``page_size`` keys),
2. reads the keys of the pages with the highest bounds first and takes the α-entmax
   threshold of those scores — the threshold of a subset is a lower bound on τ —,
3. keeps reading pages in bound order while a page's bound still clears that lower bound,
   tightening it each time, and
4. solves τ exactly on the pages read. Every page left unread has all its scores at or
   below its bound, which is at or below the lower bound, hence at or below τ: its keys
   have exactly zero weight. The result equals attention over the whole cache — no page
   is dropped on a guess (unlike top-k page selection, no mass is lost).

Pages that can matter are few when keys are locally coherent, as in trained models (the
Memory Mosaics keys are leaky averages over time); on random keys the bounds are loose
and the step reads most pages, still exactly.

    cache = KernelKVCache(batch=1, kv_heads=8, head_dim=64)
    cache.append(k, v)                                   # (B, Hkv, L, E), (B, Hkv, L, Ev)
    out = kernel_attention_step(q, cache, method="entmax15")   # or cache.attend(q, ...)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._solver import solve_entmax_block

__all__ = ["KernelKVCache"]


class KernelKVCache:
    """Growable key/value cache with per-page key bounds.

    Args:
        batch, kv_heads, head_dim: the shape of the keys ``(batch, kv_heads, ·, head_dim)``.
        value_dim: values' last dim (default ``head_dim``).
        page_size: keys per page (16–64 is a good range: smaller pages give tighter bounds
            but more of them to score).
        dtype, device: storage (keys and values keep the dtype they are appended in
            after conversion to this one).
        capacity: initial number of positions (grows by doubling).
    """

    def __init__(self, batch: int, kv_heads: int, head_dim: int, value_dim: int | None = None, *,
                 page_size: int = 32, dtype: torch.dtype = torch.float32, device=None, capacity: int = 1024):
        for name, val in (("batch", batch), ("kv_heads", kv_heads), ("head_dim", head_dim), ("page_size", page_size),
                          ("capacity", capacity)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        self.B, self.H, self.E = batch, kv_heads, head_dim
        self.Ev = head_dim if value_dim is None else value_dim
        self.page = page_size
        self.dtype, self.device = dtype, torch.device(device) if device is not None else torch.device("cpu")
        self.length = 0
        self._alloc(math.ceil(capacity / page_size) * page_size)

    # -- storage -------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        """(Re)allocate storage for ``cap`` positions, keeping what is cached."""
        P = cap // self.page
        kw = dict(dtype=self.dtype, device=self.device)
        old = (self._k, self._v, self._lo, self._hi, self._c, self._r) if self.length else None
        self._k = torch.zeros(self.B, self.H, cap, self.E, **kw)
        self._v = torch.zeros(self.B, self.H, cap, self.Ev, **kw)
        self._lo = torch.full((self.B, self.H, P, self.E), math.inf, **kw)
        self._hi = torch.full((self.B, self.H, P, self.E), -math.inf, **kw)
        self._c = torch.zeros(self.B, self.H, P, self.E, **kw)
        self._r = torch.zeros(self.B, self.H, P, **kw)
        if old is not None:
            n, p = self.length, self._pages_filled()
            for new, prev in zip((self._k, self._v), old[:2]):
                new[:, :, :n] = prev[:, :, :n]
            for new, prev in zip((self._lo, self._hi, self._c, self._r), old[2:]):
                new[:, :, :p] = prev[:, :, :p]

    def _pages_filled(self) -> int:
        return math.ceil(self.length / self.page)

    @property
    def capacity(self) -> int:
        return self._k.shape[2]

    def __len__(self) -> int:
        return self.length

    @property
    def keys(self) -> Tensor:
        """``(B, Hkv, len, E)`` view of the cached keys."""
        return self._k[:, :, :self.length]

    @property
    def values(self) -> Tensor:
        """``(B, Hkv, len, Ev)`` view of the cached values."""
        return self._v[:, :, :self.length]

    def append(self, key: Tensor, value: Tensor) -> None:
        """Append ``L`` positions: ``key`` ``(B, Hkv, L, E)``, ``value`` ``(B, Hkv, L, Ev)``."""
        if not isinstance(key, Tensor) or key.dim() != 4 or tuple(key.shape[:2]) != (self.B, self.H) \
                or key.shape[3] != self.E:
            raise ValueError(f"key must be (batch={self.B}, kv_heads={self.H}, L, head_dim={self.E}); "
                             f"got {tuple(key.shape) if isinstance(key, Tensor) else type(key).__name__}")
        want_v = (self.B, self.H, key.shape[2], self.Ev)
        if not isinstance(value, Tensor) or tuple(value.shape) != want_v:
            raise ValueError(f"value must be {want_v} to match key; got "
                             f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}")
        if not (key.is_floating_point() and value.is_floating_point()):
            raise ValueError("key and value must be floating point")
        if not (torch.isfinite(key).all() and torch.isfinite(value).all()):
            raise ValueError("key and value must be finite (no NaN or inf) to be cached")
        L = key.shape[2]
        if L == 0:
            return
        if self.length + L > self.capacity:
            cap = self.capacity
            while cap < self.length + L:
                cap *= 2
            self._alloc(cap)
        n0 = self.length
        self._k[:, :, n0:n0 + L] = key.detach().to(self.device, self.dtype)
        self._v[:, :, n0:n0 + L] = value.detach().to(self.device, self.dtype)
        self.length = n0 + L
        self._refresh_pages(n0 // self.page, self._pages_filled())

    def _refresh_pages(self, p0: int, p1: int) -> None:
        """Recompute the bounds of pages [p0, p1) from their filled keys."""
        ps = self.page
        k = self._k[:, :, p0 * ps:p1 * ps].view(self.B, self.H, p1 - p0, ps, self.E)
        filled = torch.arange(p0 * ps, p1 * ps, device=self.device).view(p1 - p0, ps, 1) < self.length
        self._lo[:, :, p0:p1] = k.masked_fill(~filled, math.inf).amin(3)
        self._hi[:, :, p0:p1] = k.masked_fill(~filled, -math.inf).amax(3)
        count = filled.sum(1).clamp_min(1).to(self.dtype)  # (pages, 1)
        c = k.masked_fill(~filled, 0.0).sum(3) / count
        self._c[:, :, p0:p1] = c
        dist = (k - c.unsqueeze(3)).norm(dim=-1).masked_fill(~filled.squeeze(-1), 0.0)
        self._r[:, :, p0:p1] = dist.amax(3)

    # -- bounds --------------------------------------------------------------------------
    def page_bounds(self, query: Tensor) -> Tensor:
        """Upper bounds on ``query · key`` over each page: ``(B, Hq, P)`` for ``query`` ``(B, Hq, E)``.

        ``Hq`` must be a multiple of the cache's kv heads (grouped-query heads share pages).
        """
        B, Hq, E = query.shape
        G = Hq // self.H
        P = self._pages_filled()
        q = query.view(B, self.H, G, E).to(self.dtype)
        lo, hi, c, r = self._lo[:, :, :P], self._hi[:, :, :P], self._c[:, :, :P], self._r[:, :, :P]
        box = torch.einsum("bhge,bhpe->bhgp", q.clamp(min=0), hi) + torch.einsum("bhge,bhpe->bhgp", q.clamp(max=0), lo)
        ball = torch.einsum("bhge,bhpe->bhgp", q, c) + q.norm(dim=-1, keepdim=True) * r.unsqueeze(2)
        ub = torch.minimum(box, ball)
        # float rounding in the bound's arithmetic must never put it below a real score
        return (ub + 1e-5 * (ub.abs() + 1)).reshape(B, Hq, P)

    # -- attention -----------------------------------------------------------------------
    def attend(self, query: Tensor, attn_mask: Tensor | None = None, scale: float | None = None,
               enable_gqa: bool = False, **kwargs) -> Tensor:
        """:func:`kernel_attention_step` of ``query`` over this cache (see there)."""
        from .functional import kernel_attention_step

        return kernel_attention_step(query, self, None, attn_mask=attn_mask, scale=scale, enable_gqa=enable_gqa,
                                     **kwargs)


def paged_entmax_step(cache: KernelKVCache, query: Tensor, alpha: float, scale: float,
                      key_mask: Tensor | None = None, first_pages: int = 4,
                      max_fraction: float = 0.25) -> tuple[Tensor, Tensor, int] | None:
    """Exact α-entmax attention of one query per row over ``cache``, reading few pages.

    Args:
        cache: the cache.
        query: ``(B, Hq, E)`` (one position), not yet scaled.
        alpha: float α > 1.
        scale: score scale.
        key_mask: optional bool ``(B, Hq, len)``, True = attend.
        first_pages: pages read before the first lower bound.
        max_fraction: give up (return ``None``) when more than this fraction of the pages
            cannot be ruled out: gathering them costs more than reading the whole cache.

    Returns:
        ``(out (B, Hq, Ev), support (B, Hq), pages_read)`` in the cache's dtype, or
        ``None`` when the whole cache should be read instead.
    """
    B, Hq, E = query.shape
    H, ps, n = cache.H, cache.page, cache.length
    G = Hq // H
    P = cache._pages_filled()
    cdt = torch.float64 if cache.dtype == torch.float64 else torch.float32
    qs = query.to(cdt) * scale
    ub = cache.page_bounds(qs).to(cdt)  # (B, Hq, P)
    order = torch.argsort(ub, dim=-1, descending=True)
    ub_sorted = ub.gather(-1, order)
    R = B * Hq
    qf = qs.reshape(R, 1, E)
    kp = cache._k.view(B * H, -1, ps, E)  # pages of keys per (b, kv head)
    vp = cache._v.view(B * H, -1, ps, cache.Ev)
    # (b, hq) -> (b, hkv) page-table base
    base = (torch.arange(B, device=qs.device).view(B, 1) * H
            + torch.arange(Hq, device=qs.device).view(1, Hq) // G).reshape(R, 1)
    k_read = min(P, first_pages)
    while True:
        pages = order.reshape(R, P)[:, :k_read]  # (R, k) the highest-bound pages
        flat = (base * kp.shape[1] + pages).reshape(-1)
        keys = kp.reshape(-1, ps, E).index_select(0, flat).view(R, k_read * ps, E).to(cdt)
        S = torch.bmm(qf, keys.transpose(1, 2)).view(R, k_read * ps)
        pos = (pages.unsqueeze(-1) * ps + torch.arange(ps, device=qs.device)).view(R, k_read * ps)
        valid = pos < n
        if key_mask is not None:
            valid &= key_mask.reshape(R, -1).gather(1, pos.clamp(max=n - 1))
        S.masked_fill_(~valid, -math.inf)
        U, W = torch.empty_like(S), torch.empty_like(S)
        Pw, st = solve_entmax_block(S, alpha, U, W)
        # pages beyond k_read are certified empty when their bound is at or below τ of
        # the pages read (a lower bound on the full τ, and equal to it when they are)
        need = int((ub_sorted.reshape(R, P) > st.t).sum(-1).max()) if k_read < P else k_read
        if need <= k_read:
            break
        if need > max_fraction * P:
            return None  # the bounds cannot rule out most pages (e.g. random keys): read everything
        k_read = min(P, max(need, 2 * k_read))
    vals = vp.reshape(-1, ps, cache.Ev).index_select(0, flat).view(R, k_read * ps, cache.Ev).to(cdt)
    out = torch.bmm((Pw / st.f).unsqueeze(1), vals).view(B, Hq, cache.Ev)
    support = (Pw > 0).sum(-1).view(B, Hq)
    return out, support, k_read
