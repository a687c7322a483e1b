"""Support-restricted α-entmax attention: the work past the scores scales with the support.

The dense blocked path (:mod:`._blocked`) sweeps every score of a block 20–40 times to
find the threshold and multiplies the (mostly zero) weights densely in five backward
matmuls. Here each block of scores is visited a handful of times and then dropped:

1. **A certified lower bound on τ.** The threshold of any *subset* of a row is a lower
   bound on the row's threshold (adding entries raises ``Σ (s - t)_+^m`` at every ``t``,
   so the root moves right). We take the subset of per-chunk maxima (one strided
   ``amax`` pass gives the row max and ~64 large entries) and run a few Newton steps on
   it from ``max - 1/a``; for α ≤ 2 (``m = 1/(α-1) ≥ 1``) ``t ↦ ||(s - t)_+||_m`` is
   convex, so every Newton iterate from the left stays a lower bound.
2. **Candidates.** Only keys scoring above that bound can carry weight: one comparison
   and one ``nonzero`` pass compact them to ragged rows (values, key index).
3. **Exact τ on the candidates** (any α: float, ``1 + 1/n``, per-row tensor) by the same
   Newton/Halley iteration as the dense solver, on ragged rows with segment sums — all
   power/``pow`` work touches candidates only. Entries outside the candidate set are
   below the bound, hence below τ, so the result is the exact full-row threshold.
4. **Sparse products.** The support (entries above τ) becomes one CSR matrix per call
   (rows = query rows, columns = ``(batch·kv-head, key)``), and the output is
   ``P @ V`` by a sparse-dense product. The backward uses the saved support only:
   ``dP = (dO Vᵀ) ⊙ 1[S]`` (sampled product), ``dS = g ⊙ (dP - Σg·dP / Σg)``,
   ``dQ = dS K``, ``dV = Pᵀ dO`` and ``dK = dSᵀ Q`` — O(T·s·D) instead of five dense
   (T × T) matmuls, and no recomputation of the scores.

A block whose candidate density exceeds :data:`DENSE_FRACTION` (a dense head, α close to
1) is handled by the dense blocked path instead, from the same lower bound, so such a
head is never slower than before.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ._solver import integer_order, solve_entmax_rows

__all__ = ["SPARSE_BLOCK_ELEMENTS", "FLUSH_CANDIDATES", "DENSE_FRACTION", "CHUNKS", "STRIP", "threshold_lower_bound", "Candidates", "SparseRows",
           "strip_maxima", "extract_candidates", "solve_candidates", "csr"]

# Scores per block on the sparse path: each block is read only a few times (not swept),
# so larger blocks than the dense path's pay off by fewer per-block small ops.
SPARSE_BLOCK_ELEMENTS = 1 << 21
# Candidates gathered from several blocks are solved together once they reach this many
# (fewer, larger ragged ops), which also bounds the memory they take.
FLUSH_CANDIDATES = 1 << 21
# A block goes dense when its candidates exceed this fraction of its scores: above it the
# sparse products and backward cost more than dense sweeps and matmuls (2 CPU cores) ...
DENSE_FRACTION = 0.25
# ... or when the strips holding them exceed this fraction (reading them is a gather).
STRIP_FRACTION = 0.6
# For integer orders m >= 3 (4/3-entmax, ...) the dense sweeps are cheap products and the
# supports are wide, so the break-even comes earlier (measured on random and trained scores).
DENSE_FRACTION_HIGH_ORDER = 0.1
STRIP_FRACTION_HIGH_ORDER = 0.3
# Chunk maxima per row used for the lower bound (a larger subset gives a tighter bound).
CHUNKS = 64
# Newton steps on the chunk maxima (each one is a certified lower bound for α ≤ 2).
BOUND_STEPS = 3
# Columns per strip: candidates are found among strips whose maximum clears the bound.
STRIP = 8


def threshold_lower_bound(maxima: Tensor, alpha: float | Tensor) -> tuple[Tensor, Tensor]:
    """A certified lower bound on each row's α-entmax threshold, and the row max.

    Args:
        maxima: (R, c) maxima of disjoint column chunks of a score block (``-inf`` =
            masked); any subset of a row's entries gives a valid bound, and the row max
            must be among them.
        alpha: float > 1 or per-row tensor (R, 1).

    Returns:
        ``(t_lb, mx)``, each (R, 1); ``t_lb = +inf`` and ``mx = -inf`` on rows with no
        admissible score.
    """
    cm = maxima
    if cm.shape[1] > 2 * CHUNKS:
        w = cm.shape[1] // CHUNKS
        cm = F.max_pool1d(cm.unsqueeze(1), w, w, ceil_mode=True).squeeze(1)
    mx = cm.amax(-1, keepdim=True)
    dead = torch.isneginf(mx)
    mx0 = torch.where(dead, torch.zeros_like(mx), mx)
    a = (alpha.to(cm.dtype) - 1) if isinstance(alpha, Tensor) else float(alpha) - 1.0
    t = mx0 - 1.0 / a
    convex = bool((a <= 1).all()) if isinstance(a, Tensor) else a <= 1.0
    m_int = None if isinstance(alpha, Tensor) else integer_order(float(alpha))
    if convex and m_int is not None and m_int <= 4:
        # integer order (the hot α): Newton in score units, relative to the row max so
        # that huge scores keep the bound's precision
        m = 1.0 / a
        tiny = torch.finfo(cm.dtype).tiny
        cz = cm - mx0
        t = torch.full_like(mx0, -1.0 / a)
        for _ in range(BOUND_STEPS):
            u = (cz - t).clamp_(min=0)
            f0 = _power(u, m - 1, m_int - 1)
            f1 = (f0 * u).sum(-1, keepdim=True)
            f0 = f0.sum(-1, keepdim=True)
            # Newton on φ(t) = f1^{1/m} - 1/a from the left: monotone, never past the root
            t = t + ((f1 - f1.pow(1 - 1 / m) / a) / f0.clamp_min(tiny)).clamp_min(0)
        # back off by a hair (and by the rounding of adding the max back) so float error
        # can never push the bound past τ
        slack = 1e-5 * (t.abs() + (1.0 / a)) + 4 * torch.finfo(cm.dtype).eps * mx0.abs()
        t_lb = torch.where(dead, torch.full_like(t, float("inf")), mx0 + (t - slack))
        return t_lb, mx
    if convex:
        # other α ≤ 2 (non-integer, per-row tensor, α → 1): Newton in normalised units
        # ũ = a·(z − max − t) ∈ [0, 1] from t = −1/a, where no power can overflow; on the
        # convex decreasing φ(t) = ‖ũ‖_m − 1 (m = 1/a) every iterate from the left stays
        # below the root
        m = 1.0 / a
        tiny = torch.finfo(cm.dtype).tiny
        cz = cm - mx0
        t = -torch.ones_like(mx0) / a
        for _ in range(BOUND_STEPS):
            uu = ((cz - t) * a).clamp_(min=0)
            g = _power(uu, m - 1, None)
            S = (g * uu).sum(-1, keepdim=True)  # Σ ũ^m = ‖ũ‖_m^m
            N = S.pow(a)
            step = (N - 1) * S / (N * a * g.sum(-1, keepdim=True)).clamp_min(tiny)
            t = t + torch.nan_to_num(step, nan=0.0, posinf=0.0).clamp_min(0)
        slack = 1e-5 * (t.abs() + (1.0 / a)) + 4 * torch.finfo(cm.dtype).eps * mx0.abs()
        t_lb = torch.where(dead, torch.full_like(t, float("inf")), mx0 + (t - slack))
        return t_lb, mx
    # α > 2: the row max alone, max - 1/a, is the bound (the normalised solver refines it
    # on the candidates)
    t = mx0 - 1.0 / a
    # rounding: back off by a hair so float error can never push the bound past τ
    slack = 1e-5 * (t.abs() + (1.0 / a)) + 4 * torch.finfo(cm.dtype).eps * mx0.abs()
    t_lb = torch.where(dead, torch.full_like(t, float("inf")), t - slack)
    return t_lb, mx


def _power(u: Tensor, e, e_int: int | None) -> Tensor:
    """``u^e`` for ``u >= 0`` (0 where ``u = 0``): products for an integer exponent, else
    ``exp(e·log u)`` with zeros kept off the slow ``log 0`` path."""
    if e_int is not None:
        if e_int == 0:
            return (u > 0).to(u.dtype)
        out = u.clone()
        for _ in range(e_int - 1):
            out.mul_(u)
        return out
    zero = u <= 0
    return (u + zero).log_().mul_(e).exp_().masked_fill_(zero, 0.0)


@dataclass
class Candidates:
    """Ragged rows of candidate scores of one block (row-major, columns ascending)."""

    values: Tensor  # (N,) scores above the row's lower bound
    local_row: Tensor  # (N,) int64 row within the block
    col: Tensor  # (N,) int64 key index within the block's key range


def strip_maxima(S2: Tensor, width: int = STRIP) -> Tensor:
    """Maxima of consecutive strips of ``width`` columns of ``S2`` (R, n); the last strip
    holds the ``n mod width`` leftover columns if any → (R, ceil(n / width)).

    (``max_pool1d`` rather than ``amax`` over a (R, n/w, w) view: reductions over a short
    innermost dim are 4× slower on CPU.)"""
    if S2.shape[1] <= width:
        return S2.amax(-1, keepdim=True)
    return F.max_pool1d(S2.unsqueeze(1), width, width, ceil_mode=True).squeeze(1)


def extract_candidates(S2: Tensor, strips: Tensor, t_lb: Tensor, width: int = STRIP,
                       max_fraction: float = 1.0, strip_fraction: float | None = None) -> Candidates | None:
    """Entries of ``S2`` (R, n) strictly above ``t_lb`` (R, 1), in row-major order.

    Only strips whose maximum (``strips``, from :func:`strip_maxima`) clears the bound
    are read, so the cost is one pass over the strip maxima plus the hit strips.
    Returns ``None`` when the candidates exceed ``max_fraction`` of the block, or the
    strips holding them ``strip_fraction`` (default :data:`STRIP_FRACTION`): the block is
    better handled densely.
    """
    R, n = S2.shape
    ns = strips.shape[1]
    hit = torch.gt(strips, t_lb).view(-1).nonzero().squeeze(1)
    if hit.numel() * width > (STRIP_FRACTION if strip_fraction is None else strip_fraction) * R * n:
        return None
    row = torch.div(hit, ns, rounding_mode="floor")
    j = hit - row * ns
    if n % width == 0:  # strips are rows of a (R·ns, width) view: gather whole strips
        vals = S2.reshape(-1, width).index_select(0, hit)
    else:  # the short last strip's clamped indices repeat the last column: masked below
        col = j.unsqueeze(1) * width + torch.arange(width, device=S2.device)
        vals = S2.view(-1).index_select(0, (row.unsqueeze(1) * n + col.clamp(max=n - 1)).view(-1))
        vals = vals.view(-1, width).masked_fill_(col >= n, float("-inf"))
    keep = vals > t_lb.view(-1).index_select(0, row).unsqueeze(1)
    k = keep.view(-1).nonzero().squeeze(1)
    if k.numel() > max_fraction * R * n:
        return None
    strip = torch.div(k, width, rounding_mode="floor")
    col = j.index_select(0, strip) * width + (k - strip * width)
    return Candidates(vals.view(-1).index_select(0, k), row.index_select(0, strip), col)


@dataclass
class SparseRows:
    """The support of a set of query rows, with what the backward needs.

    ``crow`` (R + 1,), ``col`` (N,), ``p`` (N,) form a CSR matrix of the normalised weights
    over global key columns; ``t`` and ``f`` are the per-row threshold and normaliser
    (``p = (s - t)_+^m / f``).
    """

    crow: Tensor
    col: Tensor
    p: Tensor
    t: Tensor
    f: Tensor
    n_iter: int


def segment_sum(lengths: Tensor):
    """Per-row sums of ragged rows with these lengths: (N,) → (R, 1)."""
    def rsum(x: Tensor) -> Tensor:
        return torch.segment_reduce(x, "sum", lengths=lengths, axis=0).unsqueeze(1)
    return rsum


def solve_candidates(values: Tensor, col: Tensor, lengths: Tensor, alpha: float | Tensor, mx: Tensor,
                     t_lb: Tensor) -> SparseRows:
    """Exact α-entmax thresholds of ragged candidate rows, and their support as CSR.

    Args:
        values: (N,) candidate scores, rows concatenated.
        col: (N,) global key column of each candidate.
        lengths: (R,) int64 candidates per row (0 for a row with no admissible key).
        alpha: float > 1 or per-row (R, 1) tensor.
        mx: (R, 1) row maxima; ``t_lb``: (R, 1) certified lower bounds.

    Returns:
        :class:`SparseRows` of the support (entries strictly above τ).
    """
    R = lengths.shape[0]
    rsum = segment_sum(lengths)
    row_of = torch.repeat_interleave(torch.arange(R, device=values.device), lengths, output_size=values.shape[0])

    def expand(x: Tensor) -> Tensor:
        return x.view(-1).index_select(0, row_of)

    U, W = torch.empty_like(values), torch.empty_like(values)
    weights, st = solve_entmax_rows(values, alpha, mx, U, W, rsum=rsum, expand=expand, t_init=t_lb)
    keep = (weights > 0).nonzero().squeeze(1)
    kept_rows = row_of.index_select(0, keep)
    counts = torch.bincount(kept_rows, minlength=R)
    crow = torch.zeros(R + 1, dtype=torch.int64, device=values.device)
    torch.cumsum(counts, 0, out=crow[1:])
    p = weights.index_select(0, keep).div_(st.f.view(-1).index_select(0, kept_rows))
    return SparseRows(crow, col.index_select(0, keep), p, st.t, st.f, st.n_iter)


def csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A CSR matrix from its parts (no invariant checks: the parts are built here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta": said once is enough
        return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False)


def transpose_perm(col: Tensor, n_cols: int) -> tuple[Tensor, Tensor]:
    """Permutation sorting the CSR entries by column, and the transpose's ``crow``."""
    key = col.to(torch.int32) if n_cols < 2**31 else col
    scol, perm = torch.sort(key, stable=True)
    counts = torch.bincount(scol, minlength=n_cols)
    crow_t = torch.zeros(n_cols + 1, dtype=torch.int64, device=col.device)
    torch.cumsum(counts, 0, out=crow_t[1:])
    return perm, crow_t


def entmax_g(p: Tensor, alpha: float | Tensor) -> Tensor:
    """``g = p^{2-α}`` on the support (the entmax Jacobian's diagonal weight)."""
    if not isinstance(alpha, Tensor):
        m = integer_order(alpha)
        if m == 1:
            return torch.ones_like(p)
        if m == 2:
            return p.sqrt()
    return torch.log(p).mul_(2 - alpha).exp_()  # p > 0 on the support; twice as fast as pow


__all__ += ["transpose_perm", "entmax_g", "segment_sum"]
