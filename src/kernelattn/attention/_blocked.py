"""The blocked attention path: exact kernel attention in memory linear in the sequence.

Queries are processed in blocks of rows; each block meets every admissible key at once
(``(B, H, rows, keys)`` scores, never ``(T × T)``), its threshold is found by the
in-place solvers of :mod:`._solver`, and only one threshold per query row (plus two
row sums, ``f = Σu^m`` and ``f0 = Σu^{m-1}``) is kept for the backward pass, which
rebuilds each block's weights from the scores and that threshold and applies the
closed-form entmax Jacobian:

    dS = g ⊙ (dP - (Σ g⊙dP) / Σ g),   g = p^{2-α} on the support,   dP = dO Vᵀ.

Per-row factors (``1/f``, ``f^{α-2}``) are applied to the small matmul operands and
outputs rather than to the block, which saves a pass each. Normalised ReLUⁿ (fixed
normalisation) has its own closed-form backward. The other mappings (ReLU-max, top-k)
go through the same block loop; their backward recomputes the block and differentiates
the mapping locally with autograd, which is exact and still linear in memory because
every such mapping acts on one row at a time.

Layout: grouped-query heads are folded into the row dimension, so a block's queries are
``(B·Hkv, G·rows, D)`` against keys ``(B·Hkv, keys, D)`` and no key or value is copied
per query head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..mappings.registry import Mapping
from ._solver import general_order, integer_order, normalised_weights, solve_entmax_block, solve_softmax_block
from . import _sparse
from ._sparse import (FLUSH_CANDIDATES, SparseRows, csr, entmax_g, extract_candidates, segment_sum, solve_candidates, strip_maxima,
                      threshold_lower_bound, transpose_perm)

__all__ = ["Geometry", "blocked_attention", "DEFAULT_BLOCK_ELEMENTS"]

# Target number of score entries per block (all heads of the batch together): 2^20
# float32 entries = 4 MiB per scratch buffer, sized to stay in the last-level cache.
# Measured on 2 CPU cores (B=1, H=4, E=64): T=4096 is fastest at 2^20 (64 rows per
# block); at T=16384 blocks of 16 rows make the matmuls slow, and 64 rows (2^22 scores)
# are fastest, hence the stretch to _GOOD_ROWS rows up to _STRETCH × the budget.
DEFAULT_BLOCK_ELEMENTS = 1 << 20
_MIN_ROWS, _GOOD_ROWS, _MAX_ROWS, _STRETCH = 8, 64, 1024, 4


@dataclass
class Geometry:
    """Shapes, masks and the row blocks of one attention call (canonical 4-D layout).

    ``causal_offset``: ``None`` for no causal mask, else query row ``i`` may attend to
    keys ``j <= i + causal_offset`` (0 = SDPA's top-left alignment; ``Lk - Lq`` =
    bottom-right, as in decoding with a cache).
    """

    B: int
    Hq: int
    Hkv: int
    Lq: int
    Lk: int
    D: int
    Dv: int
    causal_offset: int | None = None
    mask: Tensor | None = None  # 4-D, broadcastable to (B, Hq, Lq, Lk); bool (True = attend) or float (added)
    blocks: list = field(default_factory=list)  # (i0, i1, kend)

    @property
    def G(self) -> int:
        return self.Hq // self.Hkv

    def kend(self, i1: int) -> int:
        if self.causal_offset is None:
            return self.Lk
        return max(0, min(self.Lk, i1 + self.causal_offset))

    def plan(self, block_rows: int | None, budget: int | None = None) -> None:
        """Split the query rows so that each block holds about ``budget`` scores."""
        budget = DEFAULT_BLOCK_ELEMENTS if budget is None else budget
        per_row = self.B * self.Hq
        blocks, i0 = [], 0
        while i0 < self.Lq:
            if block_rows is not None:
                nb = block_rows
            else:
                nb = self.Lq - i0
                for _ in range(3):  # fixed point: the key range depends on the block's last row
                    per_block_row = max(1, per_row * max(1, self.kend(i0 + nb)))
                    # ~budget scores, but at least _GOOD_ROWS rows (short blocks make slow
                    # matmuls) as long as that stays within _STRETCH × budget
                    nb = max(budget // per_block_row, min(_GOOD_ROWS, (_STRETCH * budget) // per_block_row))
                    nb = max(_MIN_ROWS, min(_MAX_ROWS, nb))
                nb = max(_MIN_ROWS, (nb // _MIN_ROWS) * _MIN_ROWS)
            i1 = min(self.Lq, i0 + nb)
            blocks.append((i0, i1, self.kend(i1)))
            i0 = i1
        self.blocks = blocks

    def buffer_elements(self) -> int:
        return max((self.B * self.Hq * (i1 - i0) * ke for i0, i1, ke in self.blocks), default=0)


def _apply_masks(S4: Tensor, geo: Geometry, i0: int, i1: int, kend: int) -> None:
    """Set inadmissible scores of block rows [i0, i1) × keys [0, kend) to -inf (in place)."""
    if geo.causal_offset is not None:
        lo = max(0, i0 + geo.causal_offset + 1)  # first key that some row of the block cannot see
        if lo < kend:
            # key lo + c is hidden from block row r when c >= r + 1 - (lo - i0 - offset);
            # adding a (rows, keys) 0/-inf triangle is 4× faster than masked_fill_ on CPU
            tri = torch.full((i1 - i0, kend - lo), float("-inf"), dtype=S4.dtype, device=S4.device)
            S4[..., lo:kend].add_(tri.triu_(1 - (lo - i0 - geo.causal_offset)))
    if geo.mask is not None:
        m = geo.mask[..., i0:i1, :kend]
        if m.dtype == torch.bool:
            S4.masked_fill_(~m, float("-inf"))
        else:
            S4.add_(m)


class _Workspace:
    """Flat scratch buffers reused by every block (fresh large allocations are slow on CPU).

    Each buffer is allocated on first use: the sparse path needs only the scores' buffer
    unless a block falls back to the dense solver."""

    def __init__(self, n: int, count: int, dtype: torch.dtype, device: torch.device):
        self.n, self.dtype, self.device = max(n, 1), dtype, device
        self.bufs: list[Tensor | None] = [None] * count

    def view(self, i: int, *shape: int) -> Tensor:
        n = 1
        for s in shape:
            n *= s
        if self.bufs[i] is None:
            self.bufs[i] = torch.empty(self.n, dtype=self.dtype, device=self.device)
        return self.bufs[i][:n].view(*shape)


def _scores(geo: Geometry, ws: _Workspace, q5: Tensor, k3: Tensor, i0: int, i1: int, kend: int,
            buf: int = 0) -> tuple[Tensor, Tensor]:
    """Scaled, masked scores of one block: (B·Hkv, G·nb, kend) and the queries used."""
    nb = i1 - i0
    BK, GN = geo.B * geo.Hkv, geo.G * nb
    qb = q5[:, :, :, i0:i1].reshape(BK, GN, geo.D)
    S = ws.view(buf, BK, GN, kend)
    torch.bmm(qb, k3[:, :kend].transpose(1, 2), out=S)
    _apply_masks(S.view(geo.B, geo.Hq, nb, kend), geo, i0, i1, kend)
    return S, qb


def _rows(x: Tensor, i0: int, i1: int) -> Tensor:
    """Per-row statistics (B, Hq, Lq) → (B·Hq·nb, 1) for block rows [i0, i1)."""
    return x[:, :, i0:i1].reshape(-1, 1)


def _alpha_rows(alpha_bh: Tensor, geo: Geometry, nb: int) -> Tensor:
    return alpha_bh.expand(geo.B, geo.Hq, nb, 1).reshape(-1, 1)


def _weights_and_g(S: Tensor, t: Tensor, alpha, m_int: int | None, U: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
    """Rebuild the unnormalised ``u^m`` and ``u^{m-1}`` of a block, ``u = (S - t)_+``.

    ``p = u^m / f`` and ``g = p^{2-α} = u^{m-1} · f^{α-2}``; the per-row factors are
    applied to the small matmul operands instead of the block.
    """
    torch.sub(S, t, out=U)
    U.clamp_(min=0)
    m = m_int
    if m is None:  # tensor or non-integer exponent
        a = alpha.to(S.dtype) - 1 if isinstance(alpha, Tensor) else float(alpha) - 1.0
        torch.pow(U, 1.0 / a - 1, out=W)
        W.masked_fill_(U <= 0, 0.0)
        U.mul_(W)
        return U, W
    if m == 1:
        torch.gt(S, t, out=W)
        return U, W
    if m == 2:
        torch.mul(U, U, out=W)
        return W, U
    torch.mul(U, U, out=W)
    for _ in range(m - 3):
        W.mul_(U)
    U.mul_(W)
    return U, W


class _EntmaxAttention(torch.autograd.Function):
    """α-entmax attention (softmax for α = 1): support-restricted where sparse, blocked where dense.

    With ``sparse=True`` each block first gets a certified lower bound on its thresholds
    (:func:`._sparse.threshold_lower_bound`); if its candidates are few, they are kept
    (ragged) and solved with every other sparse block's at the end, and the support drives a
    sparse forward and backward (:mod:`._sparse`). Otherwise, and always with
    ``sparse=False`` (the reference path), the block is solved densely and its backward
    recomputes the block and applies the closed-form Jacobian.
    """

    @staticmethod
    def forward(ctx, q5: Tensor, k3: Tensor, v3: Tensor, alpha_t: Tensor | None, alpha_f: float | None,
                geo: Geometry, want_support: bool, sparse: bool = False):
        dt, dev = q5.dtype, q5.device
        B, Hq, Lq = geo.B, geo.Hq, geo.Lq
        BK = B * geo.Hkv
        softmax = alpha_t is None and alpha_f == 1.0
        sparse = sparse and not softmax
        m_int = None if alpha_t is not None or softmax else integer_order(alpha_f)
        ws = _Workspace(geo.buffer_elements(), 3, dt, dev)
        out = torch.zeros(B, geo.Hkv, geo.G, Lq, geo.Dv, dtype=dt, device=dev)
        t_all = torch.full((B, Hq, Lq), float("inf"), dtype=dt, device=dev)
        f_all = torch.ones((B, Hq, Lq), dtype=dt, device=dev)
        f0_all = torch.ones((B, Hq, Lq), dtype=dt, device=dev)
        # per-row shift of the scores the weights are rebuilt from (see _solver.BlockStats)
        c_all = torch.zeros((B, Hq, Lq), dtype=dt, device=dev)
        support = torch.zeros((B, Hq, Lq), dtype=torch.int64, device=dev) if want_support else None
        alpha_bh = alpha_t.to(dt).reshape(-1, Hq, 1, 1) if alpha_t is not None else None
        dense_blocks = []
        parts = _SparseParts(lambda ps: _solve_sparse_parts(ps, alpha_t is not None, alpha_f, geo), geo, v3, out,
                             support, t_all, keep=any(ctx.needs_input_grad))
        for i0, i1, kend in geo.blocks:
            if kend == 0:
                continue
            nb = i1 - i0
            R = B * Hq * nb
            S, _ = _scores(geo, ws, q5, k3, i0, i1, kend, buf=0)
            S2 = S.view(R, kend)
            U, W = ws.view(1, R, kend), ws.view(2, R, kend)
            t_init = None
            if softmax:
                P, st = solve_softmax_block(S2, U)
            else:
                a_rows = _alpha_rows(alpha_bh, geo, nb) if alpha_bh is not None else alpha_f
                if sparse:
                    strips = strip_maxima(S2)
                    t_lb, mx = threshold_lower_bound(strips, a_rows)
                    nan_rows = torch.isnan(mx).view(-1)
                    high = m_int is not None and m_int >= 3
                    cand = extract_candidates(S2, strips, t_lb,
                                              max_fraction=_sparse.DENSE_FRACTION_HIGH_ORDER if high else
                                              _sparse.DENSE_FRACTION,
                                              strip_fraction=_sparse.STRIP_FRACTION_HIGH_ORDER if high else None)
                    if cand is not None:
                        parts.add(_SparseBlock(cand, t_lb, mx, a_rows, geo, i0, nb, nan_rows))
                        continue
                    t_init = t_lb
                P, st = solve_entmax_block(S2, a_rows, U, W, t_init=t_init)
            dense_blocks.append((i0, i1, kend))
            if want_support:
                support[:, :, i0:i1] = torch.count_nonzero(P, dim=-1).view(B, Hq, nb)
            # normalise the small output, not the block: o = (u^m V) / f
            ob = torch.bmm(P.view(BK, geo.G * nb, kend), v3[:, :kend]).div_(st.f.view(BK, geo.G * nb, 1))
            out[:, :, :, i0:i1] = ob.view(B, geo.Hkv, geo.G, nb, geo.Dv)
            t_all[:, :, i0:i1] = st.rel.view(B, Hq, nb)
            if st.shift is not None:
                c_all[:, :, i0:i1] = st.shift.view(B, Hq, nb)
            if not softmax:  # softmax's backward rebuilds normalised weights from t = logsumexp
                f_all[:, :, i0:i1] = st.f.view(B, Hq, nb)
                f0_all[:, :, i0:i1] = st.f0.view(B, Hq, nb)
        ctx.geo, ctx.alpha_f, ctx.m_int, ctx.softmax = geo, alpha_f, m_int, softmax
        ctx.general = not softmax and general_order(alpha_t if alpha_t is not None else alpha_f)
        ctx.has_alpha_t = alpha_t is not None
        ctx.dense_blocks, ctx.sp = dense_blocks, parts.finish()
        ctx.save_for_backward(q5, k3, v3, out, t_all, f_all, f0_all, alpha_t, c_all)
        if support is not None:
            ctx.mark_non_differentiable(support)
        return out, support

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor, _grad_support=None):
        q5, k3, v3, out, t_all, f_all, f0_all, alpha_t, c_all = ctx.saved_tensors
        geo: Geometry = ctx.geo
        dt, dev = q5.dtype, q5.device
        B, Hq, Hkv, G = geo.B, geo.Hq, geo.Hkv, geo.G
        BK = B * Hkv
        need_alpha = ctx.has_alpha_t and ctx.needs_input_grad[3]
        dO5 = grad_out.to(dt).contiguous()
        dq5 = torch.zeros_like(q5)
        dk3 = torch.zeros_like(k3)
        dv3 = torch.zeros_like(v3)
        ws = _Workspace(geo.buffer_elements() if ctx.dense_blocks else 0, 4 if need_alpha else 3, dt, dev)
        alpha_bh = alpha_t.to(dt).reshape(-1, Hq, 1, 1) if ctx.has_alpha_t else None
        dalpha = torch.zeros(B, Hq, geo.Lq, dtype=dt, device=dev) if need_alpha else None
        if need_alpha and ctx.dense_blocks:
            # Σ_j dP_j p_j = dO · o  per row
            dp_p = (dO5 * out).sum(-1).view(B, Hq, geo.Lq)
        for i0, i1, kend in ctx.dense_blocks:
            nb = i1 - i0
            R, GN = B * Hq * nb, G * nb
            S, qb = _scores(geo, ws, q5, k3, i0, i1, kend, buf=0)
            S2 = S.view(R, kend)
            U, W = ws.view(1, R, kend), ws.view(2, R, kend)
            t, f, f0 = _rows(t_all, i0, i1), _rows(f_all, i0, i1), _rows(f0_all, i0, i1)
            c = _rows(c_all, i0, i1)
            if ctx.softmax:
                if bool((c != 0).any()):
                    S2.sub_(c)
                torch.sub(S2, t, out=U)
                U.exp_()
                P, Gm, c_g = U, U, None
            else:
                a_rows = _alpha_rows(alpha_bh, geo, nb) if alpha_bh is not None else ctx.alpha_f
                if ctx.general:  # rebuild in the solver's units: X = a (S - max), offset t
                    a_m1 = a_rows - 1
                    S2.sub_(c).mul_(a_m1)
                    edge = not isinstance(a_m1, Tensor) and a_m1 > 1
                    P, Gm = normalised_weights(S2, t, 1.0 / a_m1, edge, U, W)
                else:
                    if bool((c != 0).any()):
                        S2.sub_(c)
                    P, Gm = _weights_and_g(S2, t, a_rows, ctx.m_int, U, W)
                c_g = None if ctx.m_int == 1 else f.pow(a_rows - 2)  # g = u^{m-1} f^{α-2}
            dOb = dO5[:, :, :, i0:i1].reshape(BK, GN, geo.Dv)
            dP = S  # scores are no longer needed: reuse their buffer for dP, then dS
            torch.bmm(dOb, v3[:, :kend].transpose(1, 2), out=dP)
            dP2 = dP.view(R, kend)
            if need_alpha:
                plogp = ws.view(3, R, kend)
                torch.div(P, f, out=plogp)
                torch.xlogy(plogp, plogp, out=plogp)
                ent = plogp.sum(-1, keepdim=True)
                dp_plogp = plogp.mul_(dP2).sum(-1, keepdim=True)
            # dS = g ⊙ (dP - r),  r = Σ g dP / Σ g  (the row factor of g cancels in r)
            dP2.mul_(Gm)
            r = dP2.sum(-1, keepdim=True) / f0
            dP2.addcmul_(Gm, r, value=-1.0)
            if need_alpha:
                dalpha[:, :, i0:i1] = _dalpha(_alpha_rows(alpha_bh, geo, nb), _rows(dp_p, i0, i1), r,
                                              dp_plogp, ent).view(B, Hq, nb)
            kb = k3[:, :kend]
            dq = torch.bmm(dP, kb)
            if c_g is not None:
                c3 = c_g.view(BK, GN, 1)
                dq.mul_(c3)
                qb = qb * c3
            dq5[:, :, :, i0:i1] = dq.view(B, Hkv, G, nb, geo.D)
            dk3[:, :kend].baddbmm_(dP.transpose(1, 2), qb)
            dOv = dOb if ctx.softmax else dOb / f.view(BK, GN, 1)
            dv3[:, :kend].baddbmm_(P.view(BK, GN, kend).transpose(1, 2), dOv)
        for sp in ctx.sp:
            _sparse_backward(sp, q5, k3, v3, dO5, dq5, dk3, dv3, alpha_t is not None, ctx.alpha_f, dalpha)
        dalpha_out = None
        if need_alpha:
            dalpha_out = _reduce_to(dalpha.sum(-1, keepdim=True).unsqueeze(-1), alpha_t)
        return dq5, dk3, dv3, dalpha_out, None, None, None, None


def _dalpha(alpha_rows: Tensor, dp_p: Tensor, r: Tensor, dp_plogp: Tensor, ent: Tensor) -> Tensor:
    """∂L/∂α per row from its row sums (entmax package's closed form, β = 1/(α-1))."""
    beta = 1.0 / (alpha_rows - 1)
    return beta * beta * (dp_p - r) - beta * (dp_plogp - r * ent)


class _SparseBlock:
    """One block's candidates, mapped to global rows and key columns."""

    __slots__ = ("values", "col", "lengths", "row_ids", "mx", "t_lb", "alpha", "nan_ids")

    def __init__(self, cand, t_lb: Tensor, mx: Tensor, a_rows, geo: Geometry, i0: int, nb: int,
                 nan_rows: Tensor):
        R = t_lb.shape[0]
        GN = geo.G * nb
        local = torch.arange(R, device=t_lb.device)
        # block row ℓ = (bk·G + g)·nb + i  →  global row (bk·G + g)·Lq + i0 + i
        self.row_ids = torch.div(local, nb, rounding_mode="floor") * geo.Lq + i0 + local % nb
        bk = torch.div(cand.local_row, GN, rounding_mode="floor")
        self.col = bk * geo.Lk + cand.col
        self.values = cand.values
        self.lengths = torch.bincount(cand.local_row, minlength=R)
        self.mx, self.t_lb = mx, t_lb
        self.alpha = a_rows if isinstance(a_rows, Tensor) else None
        # rows with a NaN score have no candidates (NaN clears no bound): their output must
        # be NaN, as on the dense path, not a finite zero
        self.nan_ids = self.row_ids[nan_rows] if bool(nan_rows.any()) else None


class _SparseState:
    """The support of the sparse rows: CSR weights, their global rows, per-row α, and for a
    fixed-bandwidth kernel the Jacobian weights ``g`` (``dS = g ⊙ (dP - dO·o)``)."""

    __slots__ = ("rows", "row_ids", "alpha_rows", "g")

    def __init__(self, rows: SparseRows, row_ids: Tensor, alpha_rows: Tensor | None, g: Tensor | None = None):
        self.rows, self.row_ids, self.alpha_rows, self.g = rows, row_ids, alpha_rows, g


class _SparseParts:
    """Sparse blocks' candidates, solved in batches of at least :data:`FLUSH_CANDIDATES`
    (one ragged problem per batch keeps the per-op overhead low, and the batch bound keeps
    the candidates' memory bounded); each solved batch writes its output rows at once.
    The solved supports are kept for the backward only when one will run (``keep``): under
    ``torch.no_grad()`` they would grow as length × support for nothing."""

    def __init__(self, solve, geo: Geometry, v3: Tensor, out: Tensor, support: Tensor | None,
                 t_all: Tensor | None = None, keep: bool = True):
        self.solve, self.geo, self.v3, self.out, self.support, self.t_all = solve, geo, v3, out, support, t_all
        self.keep = keep
        self.pending, self.count, self.states = [], 0, []

    def add(self, block: "_SparseBlock") -> None:
        self.pending.append(block)
        self.count += block.values.numel()
        if self.count >= FLUSH_CANDIDATES:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        sp = self.solve(self.pending)
        nan_ids = [b.nan_ids for b in self.pending if b.nan_ids is not None]
        self.pending, self.count = [], 0
        geo, ids = self.geo, sp.row_ids
        A = csr(sp.rows.crow, sp.rows.col, sp.rows.p, (ids.shape[0], geo.B * geo.Hkv * geo.Lk))
        self.out.view(-1, geo.Dv).index_copy_(0, ids, A @ self.v3.reshape(-1, geo.Dv))
        if self.t_all is not None:
            self.t_all.view(-1).index_copy_(0, ids, sp.rows.t.view(-1))
        if self.support is not None:
            self.support.view(-1).index_copy_(0, ids, sp.rows.crow.diff())
        for bad in nan_ids:
            self.out.view(-1, geo.Dv)[bad] = float("nan")
        if self.keep:
            self.states.append(sp)

    def finish(self) -> list:
        self.flush()
        return self.states


def _solve_sparse_parts(parts: list, tensor_alpha: bool, alpha_f: float | None, geo: Geometry) -> _SparseState:
    """Solve the candidates of every sparse block at once (one ragged problem)."""
    cat = torch.cat
    alpha_rows = cat([p.alpha for p in parts]) if tensor_alpha else None
    rows = solve_candidates(cat([p.values for p in parts]), cat([p.col for p in parts]),
                            cat([p.lengths for p in parts]), alpha_rows if tensor_alpha else alpha_f,
                            cat([p.mx for p in parts]), cat([p.t_lb for p in parts]))
    return _SparseState(rows, cat([p.row_ids for p in parts]), alpha_rows)


def _sparse_backward(sp: _SparseState, q5: Tensor, k3: Tensor, v3: Tensor, dO5: Tensor, dq5: Tensor,
                     dk3: Tensor, dv3: Tensor, tensor_alpha: bool, alpha_f: float | None,
                     dalpha: Tensor | None) -> None:
    """Gradients of the support-restricted rows, in O(support · D), accumulated in place."""
    rows, ids = sp.rows, sp.row_ids
    Rs, n_cols = ids.shape[0], k3.shape[0] * k3.shape[1]
    D, Dv = q5.shape[-1], v3.shape[-1]
    lengths = rows.crow.diff()
    N = rows.p.shape[0]
    seg = torch.repeat_interleave(torch.arange(Rs, device=ids.device), lengths, output_size=N)
    rsum = segment_sum(lengths)
    dO_s = dO5.reshape(-1, Dv).index_select(0, ids)
    q_s = q5.reshape(-1, D).index_select(0, ids)
    k_flat, v_flat = k3.reshape(n_cols, D), v3.reshape(n_cols, Dv)
    # dP on the support only: the sampled product (dO Vᵀ) ⊙ 1[S]
    pattern = csr(rows.crow, rows.col, torch.zeros_like(rows.p), (Rs, n_cols))
    dP = torch.sparse.sampled_addmm(pattern, dO_s, v_flat.t(), beta=0.0).values()
    if sp.g is not None:  # fixed bandwidth: dS = g ⊙ (dP - Σ p dP)
        g = sp.g
        r = rsum(rows.p * dP)
    else:  # α-entmax: dS = g ⊙ (dP - Σ g dP / Σ g),  g = p^{2-α}
        alpha = sp.alpha_rows.view(-1).index_select(0, seg) if tensor_alpha else alpha_f
        g = entmax_g(rows.p, alpha)
        r = rsum(g * dP) / rsum(g).clamp_min(torch.finfo(g.dtype).tiny)
    dS = (dP - r.view(-1).index_select(0, seg)).mul_(g)
    if dalpha is not None:
        plogp = torch.xlogy(rows.p, rows.p)
        da = _dalpha(sp.alpha_rows, rsum(rows.p * dP), r, rsum(plogp * dP), rsum(plogp))
        dalpha.view(-1).index_copy_(0, ids, da.view(-1))
    dq5.view(-1, D).index_copy_(0, ids, csr(rows.crow, rows.col, dS, (Rs, n_cols)) @ k_flat)
    perm, crow_t = transpose_perm(rows.col, n_cols)
    seg_t = seg.index_select(0, perm)
    dv3.view(-1, Dv).add_(csr(crow_t, seg_t, rows.p.index_select(0, perm), (n_cols, Rs)) @ dO_s)
    dk3.view(-1, D).add_(csr(crow_t, seg_t, dS.index_select(0, perm), (n_cols, Rs)) @ q_s)


def _reduce_to(grad_bh11: Tensor, alpha_t: Tensor) -> Tensor:
    """Sum a (B, Hq, 1, 1) gradient down to the shape ``alpha_t`` was given in."""
    Hq = grad_bh11.shape[1]
    if alpha_t.dim() == 0:
        return grad_bh11.sum().to(alpha_t.dtype)
    if alpha_t.dim() == 1:  # (Hq,) or (1,)
        g = grad_bh11.sum(dim=(0, 2, 3))
        return (g if alpha_t.numel() == Hq else g.sum().reshape(1)).to(alpha_t.dtype)
    shape = alpha_t.shape
    g = grad_bh11
    red = [i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1]
    if red:
        g = g.sum(dim=red, keepdim=True)
    return g.reshape(shape).to(alpha_t.dtype)


class _RowStatAttention(torch.autograd.Function):
    """Normalised ReLUⁿ, ReLU-max and top-k (softmax or uniform), closed-form backward.

    Each keeps at most three numbers per query row — the row maximum ``m`` (ReLU-max,
    top-k softmax), the k-th largest score ``τ`` (top-k) and the normaliser ``f`` — so
    the backward rebuilds a block's weights without sorting or autograd:

    * normalised ReLUⁿ (fixed-bandwidth n-weight kernel): ``w = relu(a·s + b)^n``,
      ``p = w/f``; ``∂L/∂s_j = (a n / f) relu(a s_j + b)^{n-1} (dP_j - dO·o)``.
    * ReLU-max: ``r = relu((s - m)/T + 1)``, ``p = r/f``; ``∂L/∂s_j = c_j/T`` with
      ``c = 1[r>0](dP - dO·o)/f``, minus ``Σc/T`` shared over the row's maxima (``m``
      depends on them).
    * top-k softmax: ``p ∝ exp(s - m)`` on ``s >= τ``; ``∂L/∂s = p(dP - dO·o)``.
    * top-k uniform: ``p = 1/f`` on ``s >= τ``; no gradient to the scores.

    Entries tied with the k-th score are all kept (``torch.topk`` would pick among them).
    """

    @staticmethod
    def forward(ctx, q5: Tensor, k3: Tensor, v3: Tensor, mapping: Mapping, geo: Geometry, want_support: bool,
                sparse: bool = False):
        dt, dev = q5.dtype, q5.device
        B, Hq, Lq = geo.B, geo.Hq, geo.Lq
        ws = _Workspace(geo.buffer_elements(), 1, dt, dev)
        out = torch.zeros(B, geo.Hkv, geo.G, Lq, geo.Dv, dtype=dt, device=dev)
        m_all = torch.zeros((B, Hq, Lq), dtype=dt, device=dev)
        t_all = torch.full((B, Hq, Lq), float("inf"), dtype=dt, device=dev)
        f_all = torch.ones((B, Hq, Lq), dtype=dt, device=dev)
        support = torch.zeros((B, Hq, Lq), dtype=torch.int64, device=dev) if want_support else None
        # normalised ReLUⁿ with a > 0 has a fixed support s > -b/a: no search, only the
        # candidates and the sparse products (:mod:`._sparse`)
        sparse = sparse and mapping.kind == "normalized_relu" and mapping.scale > 0
        dense_blocks = []
        parts = _SparseParts(lambda ps: _fixed_kernel_rows(ps, mapping), geo, v3, out, support,
                             keep=any(ctx.needs_input_grad))
        for i0, i1, kend in geo.blocks:
            if kend == 0:
                continue
            nb = i1 - i0
            S, _ = _scores(geo, ws, q5, k3, i0, i1, kend)
            if sparse:
                S2 = S.view(-1, kend)
                t = S2.new_full((S2.shape[0], 1), -mapping.bias / mapping.scale)
                strips = strip_maxima(S2)
                cand = extract_candidates(S2, strips, t, max_fraction=_sparse.DENSE_FRACTION)
                if cand is not None:
                    parts.add(_SparseBlock(cand, t, t, None, geo, i0, nb, torch.isnan(strips).any(-1)))
                    continue
            dense_blocks.append((i0, i1, kend))
            m, t = _row_stats(S, mapping)
            _rebuild(S, mapping, m, t)  # in place: unnormalised weights
            f = S.sum(-1, keepdim=True)
            f = torch.where(f > 0, f, torch.ones_like(f))
            if want_support:
                support[:, :, i0:i1] = torch.count_nonzero(S, dim=-1).view(B, Hq, nb)
            ob = torch.bmm(S, v3[:, :kend]).div_(f)
            out[:, :, :, i0:i1] = ob.view(B, geo.Hkv, geo.G, nb, geo.Dv)
            m_all[:, :, i0:i1] = m.view(B, Hq, nb)
            t_all[:, :, i0:i1] = t.view(B, Hq, nb)
            f_all[:, :, i0:i1] = f.view(B, Hq, nb)
        ctx.geo, ctx.mapping, ctx.dense_blocks, ctx.sp = geo, mapping, dense_blocks, parts.finish()
        ctx.save_for_backward(q5, k3, v3, out, m_all, t_all, f_all)
        if support is not None:
            ctx.mark_non_differentiable(support)
        return out, support

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor, _grad_support=None):
        q5, k3, v3, out, m_all, t_all, f_all = ctx.saved_tensors
        geo: Geometry = ctx.geo
        B, Hq, Hkv, G = geo.B, geo.Hq, geo.Hkv, geo.G
        BK = B * Hkv
        mp: Mapping = ctx.mapping
        kind = mp.kind
        dO5 = grad_out.to(q5.dtype).contiguous()
        do_o = (dO5 * out).sum(-1, keepdim=True)  # Σ_j p_j dP_j = dO · o, per row
        dq5, dk3, dv3 = torch.zeros_like(q5), torch.zeros_like(k3), torch.zeros_like(v3)
        ws = _Workspace(geo.buffer_elements() if ctx.dense_blocks else 0, 3, q5.dtype, q5.device)
        for i0, i1, kend in ctx.dense_blocks:
            nb = i1 - i0
            GN = G * nb
            S, qb = _scores(geo, ws, q5, k3, i0, i1, kend)
            m = m_all[:, :, i0:i1].reshape(BK, GN, 1)
            f = f_all[:, :, i0:i1].reshape(BK, GN, 1)
            dOb = dO5[:, :, :, i0:i1].reshape(BK, GN, geo.Dv)
            kb = k3[:, :kend]
            if kind == "relumax":
                is_max = S == m  # before S is overwritten: the entries m depends on
            g = _rebuild(S, mp, m, t_all[:, :, i0:i1].reshape(BK, GN, 1), ws.view(2, BK, GN, kend))
            dv3[:, :kend].baddbmm_(S.transpose(1, 2), dOb / f)
            if kind == "topk_uniform":
                continue
            dS = ws.view(1, BK, GN, kend)
            torch.bmm(dOb, v3[:, :kend].transpose(1, 2), out=dS)
            dS.sub_(do_o[:, :, :, i0:i1].reshape(BK, GN, 1))
            if kind == "topk_softmax":
                dS.mul_(S).div_(f)
            elif kind == "normalized_relu":
                # w, f and g were rebuilt divided by m^n, m^n and m^{n-1}: one 1/m remains
                dS.mul_(g).mul_((mp.scale * mp.n) / (f * m if mp.n > 1 else f))
            else:  # relumax
                dS.mul_(S > 0).div_(f * mp.temperature)
                share = dS.sum(-1, keepdim=True) / is_max.sum(-1, keepdim=True).clamp_min(1)
                dS.sub_(is_max * share)
            dq5[:, :, :, i0:i1] = torch.bmm(dS, kb).view(B, Hkv, G, nb, geo.D)
            dk3[:, :kend].baddbmm_(dS.transpose(1, 2), qb)
        for sp in ctx.sp:
            _sparse_backward(sp, q5, k3, v3, dO5, dq5, dk3, dv3, False, None, None)
        return dq5, dk3, dv3, None, None, None, None


def _fixed_kernel_rows(parts: list, mapping: Mapping) -> _SparseState:
    """Normalised ReLUⁿ on the candidates: ``w = (a s + b)^n``, ``p = w / Σw``, and the
    Jacobian weights ``g = a n (a s + b)^{n-1} / Σw``."""
    cat = torch.cat
    values, col, lengths = cat([p.values for p in parts]), cat([p.col for p in parts]), cat([p.lengths for p in parts])
    R, N = lengths.shape[0], values.shape[0]
    row_of = torch.repeat_interleave(torch.arange(R, device=values.device), lengths, output_size=N)
    n, a = int(mapping.n), float(mapping.scale)
    u = values.mul(a).add_(mapping.bias).clamp_(min=0)
    top = None
    if n > 1:  # relative to the row's largest base, as on the dense path (underflow of u^n)
        top = torch.segment_reduce(u, "max", lengths=lengths, axis=0, unsafe=True, initial=0.0)
        top = torch.where(top > 0, top, torch.ones_like(top))
        u = u / top.index_select(0, row_of)
    w = u if n == 1 else u.pow(n)
    keep = (w > 0).nonzero().squeeze(1)  # (a s + b)^n can underflow to 0 for large n
    kept_rows = row_of.index_select(0, keep)
    counts = torch.bincount(kept_rows, minlength=R)
    crow = torch.zeros(R + 1, dtype=torch.int64, device=values.device)
    torch.cumsum(counts, 0, out=crow[1:])
    f = segment_sum(lengths)(w).view(-1)
    f = torch.where(f > 0, f, torch.ones_like(f))
    inv_f = (1.0 / f).index_select(0, kept_rows)
    w, u = w.index_select(0, keep), u.index_select(0, keep)
    # u was divided by the row's top: g = a n u^{n-1} / (f top)
    inv_ft = inv_f if top is None else inv_f / top.index_select(0, kept_rows)
    g = (torch.ones_like(u) if n == 1 else u.pow(n - 1)).mul_(inv_ft * (a * n))
    rows = SparseRows(crow, col.index_select(0, keep), w.mul_(inv_f), f.view(-1, 1), f.view(-1, 1), 0)
    return _SparseState(rows, cat([p.row_ids for p in parts]), None, g)


def _row_stats(S: Tensor, mapping: Mapping) -> tuple[Tensor, Tensor]:
    """The per-row numbers a block's weights are rebuilt from: (m, τ)."""
    if mapping.kind == "normalized_relu":
        # m = the row's largest weight base relu(a·max + b) (a > 0): the weights are divided
        # by it before the power, as relu(...)^n underflows to 0 (or a denormal that a
        # flush-to-zero CPU divides into NaN) for scores near 1e-20 in float32
        top = (S.amax(-1, keepdim=True) * mapping.scale + mapping.bias).clamp_(min=0)
        m = torch.where(top > 0, top, torch.ones_like(top)) if mapping.n > 1 else torch.ones_like(top)
        return m, torch.full_like(m, float("inf"))
    if mapping.kind == "relumax":
        m = S.amax(-1, keepdim=True)
        t = torch.full_like(m, float("inf"))
    else:
        top = torch.topk(S, min(mapping.k, S.shape[-1]), dim=-1).values
        m, t = top[..., :1], top[..., -1:]
    return torch.where(torch.isneginf(m), torch.zeros_like(m), m), t


def _rebuild(S: Tensor, mapping: Mapping, m: Tensor, t: Tensor, W: Tensor | None = None) -> Tensor | None:
    """In place: scores → unnormalised weights from the saved row stats.

    For normalised ReLUⁿ with a buffer ``W``, also returns ``relu(a·s + b)^{n-1}`` in it
    (the backward's ``g``); otherwise returns ``None``.
    """
    kind = mapping.kind
    if kind == "normalized_relu":
        n = int(mapping.n)
        S.mul_(mapping.scale).add_(mapping.bias).clamp_(min=0)  # masked -inf stay at 0
        if n > 1:
            S.div_(m)  # relative to the row's largest base (see _row_stats)
        g = None
        if W is not None:
            if n == 1:
                torch.gt(S, 0, out=W)
            else:
                torch.pow(S, n - 1, out=W)
            g = W
        if n > 1:
            S.pow_(n)
        return g
    if kind == "relumax":
        S.sub_(m).div_(mapping.temperature).add_(1).clamp_(min=0)  # masked -inf -> 0
        return None
    below = S < t  # t = -inf (fewer than k admissible keys): keeps every admissible key
    if kind == "topk_softmax":
        S.sub_(m).exp_().masked_fill_(below, 0.0)  # masked -inf -> exp(-inf) = 0
    else:
        keep = ~below & ~torch.isneginf(S)
        S.copy_(keep)
    return None


class _MappingAttention(torch.autograd.Function):
    """Row-local mappings (fixed normalisation, ReLU-max, top-k) through the block loop.

    Backward recomputes each block's scores and differentiates the mapping with autograd.
    """

    @staticmethod
    def forward(ctx, q5: Tensor, k3: Tensor, v3: Tensor, mapping: Mapping, geo: Geometry, want_support: bool):
        dt, dev = q5.dtype, q5.device
        B, Hq, Lq = geo.B, geo.Hq, geo.Lq
        BK = B * geo.Hkv
        ws = _Workspace(geo.buffer_elements(), 1, dt, dev)
        out = torch.zeros(B, geo.Hkv, geo.G, Lq, geo.Dv, dtype=dt, device=dev)
        support = torch.zeros((B, Hq, Lq), dtype=torch.int64, device=dev) if want_support else None
        for i0, i1, kend in geo.blocks:
            if kend == 0:
                continue
            nb = i1 - i0
            S, _ = _scores(geo, ws, q5, k3, i0, i1, kend)
            P = mapping(S.view(B, Hq, nb, kend), -1)
            if want_support:
                support[:, :, i0:i1] = torch.count_nonzero(P, dim=-1)
            ob = torch.bmm(P.reshape(BK, geo.G * nb, kend), v3[:, :kend])
            out[:, :, :, i0:i1] = ob.view(B, geo.Hkv, geo.G, nb, geo.Dv)
        ctx.geo, ctx.mapping = geo, mapping
        ctx.save_for_backward(q5, k3, v3)
        if support is not None:
            ctx.mark_non_differentiable(support)
        return out, support

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor, _grad_support=None):
        q5, k3, v3 = ctx.saved_tensors
        geo: Geometry = ctx.geo
        B, Hq, Hkv, G = geo.B, geo.Hq, geo.Hkv, geo.G
        BK = B * Hkv
        dO5 = grad_out.to(q5.dtype).contiguous()
        dq5, dk3, dv3 = torch.zeros_like(q5), torch.zeros_like(k3), torch.zeros_like(v3)
        ws = _Workspace(geo.buffer_elements(), 1, q5.dtype, q5.device)
        for i0, i1, kend in geo.blocks:
            if kend == 0:
                continue
            nb = i1 - i0
            GN = G * nb
            S, qb = _scores(geo, ws, q5, k3, i0, i1, kend)
            dOb = dO5[:, :, :, i0:i1].reshape(BK, GN, geo.Dv)
            with torch.enable_grad():
                Sg = S.view(B, Hq, nb, kend).detach().requires_grad_(True)
                P = ctx.mapping(Sg, -1)
                dP = torch.bmm(dOb, v3[:, :kend].transpose(1, 2)).view(B, Hq, nb, kend)
                if P.requires_grad:
                    (dS,) = torch.autograd.grad(P, Sg, dP)
                    dS = dS.masked_fill(torch.isneginf(Sg.detach()), 0.0).reshape(BK, GN, kend)
                else:  # piecewise-constant mapping (top-k uniform): no gradient to scores
                    dS = None
            P = P.detach().reshape(BK, GN, kend)
            kb = k3[:, :kend]
            if dS is not None:
                dq5[:, :, :, i0:i1] = torch.bmm(dS, kb).view(B, Hkv, G, nb, geo.D)
                dk3[:, :kend].baddbmm_(dS.transpose(1, 2), qb)
            dv3[:, :kend].baddbmm_(P.transpose(1, 2), dOb)
        return dq5, dk3, dv3, None, None, None


def blocked_attention(q5: Tensor, k3: Tensor, v3: Tensor, geo: Geometry, mapping: Mapping,
                      alpha_t: Tensor | None, want_support: bool, sparse: bool = False
                      ) -> tuple[Tensor, Tensor | None]:
    """Run the blocked path on canonical inputs.

    Args:
        q5: scaled queries (B, Hkv, G, Lq, D) in the compute dtype.
        k3, v3: keys (B·Hkv, Lk, D) and values (B·Hkv, Lk, Dv).
        geo: planned :class:`Geometry`.
        mapping: the resolved mapping (entmax kind uses the closed form).
        alpha_t: per-head α tensor (overrides ``mapping``) or ``None``.
        want_support: also return the support size per (B, Hq, Lq).
        sparse: α-entmax only: restrict the threshold search and the products to the
            support where it is small (:mod:`._sparse`); ``False`` is the dense reference.

    Returns:
        ``(out, support)`` with ``out`` (B, Hkv, G, Lq, Dv).
    """
    if alpha_t is not None:
        return _EntmaxAttention.apply(q5, k3, v3, alpha_t, None, geo, want_support, sparse)
    if mapping.kind == "entmax":
        return _EntmaxAttention.apply(q5, k3, v3, None, float(mapping.alpha), geo, want_support, sparse)
    if mapping.kind in ("relumax", "topk_softmax", "topk_uniform") or (
            mapping.kind == "normalized_relu" and not isinstance(mapping.bias, Tensor)):
        return _RowStatAttention.apply(q5, k3, v3, mapping, geo, want_support, sparse)
    return _MappingAttention.apply(q5, k3, v3, mapping, geo, want_support)
