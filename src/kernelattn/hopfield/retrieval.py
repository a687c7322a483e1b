"""Static retrieval: store patterns, iterate a corrupted query until it stops moving.

One step is ``q ← post(Xᵀ ŷ(β X q))`` — attention of the query over the stored patterns
with keys = values = ``X``. With softmax it is the modern Hopfield update; with a sparse
mapping it lands exactly on a stored pattern once the score gap clears the mapping's
margin (:attr:`HopfieldMapping.margin`); with k-subsets it lands on a sum of k patterns.
Each step is a concave–convex step of :func:`hopfield_energy`, so the energy never
increases.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from .._validation import check_bool_mask, check_int, check_number, check_tensor
from .mappings import HopfieldMapping, resolve_hopfield_mapping
from .post import resolve_post

__all__ = ["hopfield_retrieve", "hopfield_step", "pattern_margins", "Retrieval"]


class Retrieval(NamedTuple):
    """What :func:`hopfield_retrieve` returns with ``return_info=True``.

    Attributes:
        states: ``(..., Q, d)`` final states.
        weights: ``(..., Q, M)`` weights of the last step (the states' mixture of patterns).
        n_iter: number of updates done.
        converged: ``(..., Q)`` bool, the last update moved the state by at most ``tol``.
    """

    states: Tensor
    weights: Tensor
    n_iter: int
    converged: Tensor


def check_states(memories: Tensor, queries: Tensor, beta=None, mask: Tensor | None = None) -> tuple[int, ...]:
    """Validate the arguments every Hopfield function shares; return the scores' shape ``(..., Q, M)``.

    ``memories`` ``(..., M, d)`` with ``M, d >= 1`` and ``queries`` ``(..., Q, d)``: floating,
    one dtype and device, leading dims that broadcast. ``beta``: a finite number > 0, or a
    positive floating tensor that broadcasts against the scores. ``mask``: bool, True =
    the pattern takes part, ``(..., M)`` or ``(..., Q, M)``.
    """
    check_tensor(memories, "memories", nonempty=(-1,))
    check_tensor(queries, "queries", like=memories, like_name="memories")
    for name, t, n in (("memories", memories, "M"), ("queries", queries, "Q")):
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., {n}, d) (at least 2 dims), got {tuple(t.shape)}; "
                             f"use {name}.unsqueeze(0) for a single pattern")
    if memories.shape[-2] == 0:
        raise ValueError(f"memories has no stored pattern (shape {tuple(memories.shape)}); store at least one")
    if memories.shape[-1] != queries.shape[-1]:
        raise ValueError(f"memories (..., M, {memories.shape[-1]}) and queries (..., Q, {queries.shape[-1]}) "
                         "must have the same pattern size d")
    try:
        lead = torch.broadcast_shapes(memories.shape[:-2], queries.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading (batch) dims of memories {tuple(memories.shape)} and queries "
                         f"{tuple(queries.shape)} do not broadcast") from None
    scores = (*lead, queries.shape[-2], memories.shape[-2])
    if isinstance(beta, Tensor) and beta.numel() != 1:
        check_tensor(beta, "beta", like=memories, like_name="memories")
        if not bool(torch.isfinite(beta).all()) or not bool((beta > 0).all()):
            raise ValueError("beta must be finite and > 0 everywhere")
    elif beta is not None:
        check_number(beta, "beta", positive=True, hint=" (the inverse temperature)")
    if mask is not None:
        if isinstance(mask, Tensor) and mask.dim() == 0:
            raise ValueError("mask must have shape (..., M) or (..., Q, M) (True = the pattern takes part), got a "
                             "0-dim tensor")
        m = mask.unsqueeze(-2) if isinstance(mask, Tensor) and mask.dim() != len(scores) else mask
        check_bool_mask(m, "mask", scores, memories, "memories")
    return scores


def _masked(scores: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Scores with masked patterns at ``-inf``, and the rows with no pattern left (or None).

    Those rows get score 0 everywhere so the mapping (and its gradient) stays finite;
    the caller zeroes their weights: a state with nothing stored retrieves zeros.
    """
    if mask is None:
        return scores, None
    m = mask if mask.dim() == scores.dim() else mask.unsqueeze(-2)
    empty = ~m.any(-1, keepdim=True)  # (..., Q, 1)
    scores = scores.masked_fill(~m, -math.inf)
    if bool(empty.any()):
        scores = scores.masked_fill(empty, 0.0)
        return scores, empty
    return scores, None


def hopfield_step(memories: Tensor, queries: Tensor, mapping: str | HopfieldMapping = "softmax",
                  beta: float = 1.0, post: str | Callable[[Tensor], Tensor] = "identity",
                  mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One update ``q ← post(Xᵀ ŷ(βXq))``.

    Args: as :func:`hopfield_retrieve`.

    Returns:
        ``(new_queries (..., Q, d), weights (..., Q, M))``.
    """
    check_states(memories, queries, beta, mask)
    return _step(memories, queries, resolve_hopfield_mapping(mapping), beta, resolve_post(post)[1], mask)


def _step(memories: Tensor, queries: Tensor, hm: HopfieldMapping, beta, post_fn, mask: Tensor | None
          ) -> tuple[Tensor, Tensor]:
    scores, empty = _masked(beta * (queries @ memories.transpose(-1, -2)), mask)  # (..., Q, M)
    w = hm(scores, dim=-1)
    if empty is not None:
        w = w.masked_fill(empty, 0.0)
    return post_fn(w @ memories), w


def hopfield_retrieve(memories: Tensor, queries: Tensor, mapping: str | HopfieldMapping = "softmax",
                      beta: float = 1.0, n_iter: int = 100, tol: float = 1e-6,
                      post: str | Callable[[Tensor], Tensor] = "identity", mask: Tensor | None = None,
                      return_info: bool = False) -> Tensor | Retrieval:
    """Retrieve stored patterns from (corrupted) queries by iterating the Hopfield update.

    Plain static retrieval — no projections, no normalisation unless ``post`` asks —
    so ``hopfield_retrieve(images, masked_images, "sparsemax")`` is the whole recipe.
    Differentiable (autograd runs through the iterations).

    Args:
        memories: stored patterns ``X``, ``(M, d)`` or batched ``(..., M, d)``.
        queries: initial states, ``(Q, d)`` or ``(..., Q, d)``.
        mapping: ``softmax``, ``sparsemax``, ``entmax15``, ``entmax43``, ``entmax:<alpha>``,
            ``normmax`` / ``normmax:<alpha>``, ``ksubsets:<k>`` (weights on the capped
            simplex summing to k: the result is a sum of k patterns).
        beta: inverse temperature ``β > 0`` multiplying the scores ``Xq``.
        n_iter: maximum number of updates (>= 1).
        tol: stop once no state moves by more than ``tol · max(1, max|X|)`` (max-norm).
        post: ``identity`` (default), ``l2`` (ℓ2-normalise each state), ``layernorm``
            (centre and scale to unit variance, no affine), or any callable on
            ``(..., d)`` (no energy guarantee then).
        mask: optional boolean ``(..., M)`` or ``(..., Q, M)``, True = pattern takes part.
            A state whose patterns are all masked has nothing to retrieve: its weights
            are zero and its state is ``post(0)`` (zeros for the named posts), as in the
            :class:`Hopfield` layer.
        return_info: return a :class:`Retrieval` with the last weights and convergence.

    Returns:
        ``(..., Q, d)`` retrieved states, or a :class:`Retrieval`.
    """
    check_states(memories, queries, beta, mask)
    n_iter = check_int(n_iter, "n_iter", minimum=1)
    check_number(tol, "tol", nonnegative=True)
    hm = resolve_hopfield_mapping(mapping)
    _, post_fn = resolve_post(post)
    scale = max(1.0, float(memories.detach().abs().amax())) if memories.numel() else 1.0
    q = queries
    converged = torch.zeros(queries.shape[:-1], dtype=torch.bool, device=queries.device)
    w = None
    done = 0
    for done in range(1, n_iter + 1):
        q_new, w = _step(memories, q, hm, beta, post_fn, mask)
        moved = (q_new - q).detach().abs().amax(-1)
        q = q_new
        converged = moved <= tol * scale
        if bool(converged.all()):
            break
    if return_info:
        return Retrieval(q, w, done, converged)
    return q


def pattern_margins(memories: Tensor) -> Tensor:
    """Separation of each stored pattern: ``Δ_i = x_iᵀx_i − max_{j≠i} x_iᵀx_j``.

    Pattern ``x_i`` is an exact fixed point of the update with an exactly sparse mapping
    when ``β Δ_i >= mapping.margin`` (``1/(α−1)`` for α-entmax, 1 for normmax).

    Args:
        memories: ``(..., M, d)`` with ``M >= 2``.

    Returns:
        ``(..., M)`` margins.
    """
    check_tensor(memories, "memories")
    if memories.dim() < 2 or memories.shape[-2] < 2:
        raise ValueError(f"pattern_margins needs at least two stored patterns: memories (..., M, d) with M >= 2, "
                         f"got shape {tuple(memories.shape)}")
    g = memories @ memories.transpose(-1, -2)  # (..., M, M)
    diag = torch.diagonal(g, dim1=-2, dim2=-1)
    off = g.masked_fill(torch.eye(g.shape[-1], dtype=torch.bool, device=g.device), -math.inf)
    return diag - off.amax(-1)
