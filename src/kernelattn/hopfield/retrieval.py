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


def _check(memories: Tensor, queries: Tensor, beta: float) -> None:
    for name, t in (("memories", memories), ("queries", queries)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.dim() < 2:
            raise ValueError(f"{name} must be a floating-point tensor of shape (..., n, d), got "
                             f"{getattr(t, 'shape', type(t).__name__)}")
    if memories.shape[-1] != queries.shape[-1]:
        raise ValueError(f"memories (..., M, {memories.shape[-1]}) and queries (..., Q, {queries.shape[-1]}) "
                         "must have the same pattern size d")
    if not (isinstance(beta, (int, float)) and beta > 0) and not isinstance(beta, Tensor):
        raise ValueError(f"beta must be > 0, got {beta!r}")


def hopfield_step(memories: Tensor, queries: Tensor, mapping: str | HopfieldMapping = "softmax",
                  beta: float = 1.0, post: str | Callable[[Tensor], Tensor] = "identity",
                  mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One update ``q ← post(Xᵀ ŷ(βXq))``.

    Args: as :func:`hopfield_retrieve`.

    Returns:
        ``(new_queries (..., Q, d), weights (..., Q, M))``.
    """
    hm = resolve_hopfield_mapping(mapping)
    _, post_fn = resolve_post(post)
    scores = beta * (queries @ memories.transpose(-1, -2))  # (..., Q, M)
    if mask is not None:
        scores = scores.masked_fill(~(mask if mask.dim() == scores.dim() else mask.unsqueeze(-2)), -math.inf)
    w = hm(scores, dim=-1)
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
        return_info: return a :class:`Retrieval` with the last weights and convergence.

    Returns:
        ``(..., Q, d)`` retrieved states, or a :class:`Retrieval`.
    """
    _check(memories, queries, beta)
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be an integer >= 1, got {n_iter!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    hm = resolve_hopfield_mapping(mapping)
    scale = max(1.0, float(memories.detach().abs().amax())) if memories.numel() else 1.0
    q = queries
    converged = torch.zeros(queries.shape[:-1], dtype=torch.bool, device=queries.device)
    w = None
    done = 0
    for done in range(1, n_iter + 1):
        q_new, w = hopfield_step(memories, q, hm, beta, post, mask)
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
    if memories.shape[-2] < 2:
        raise ValueError("pattern_margins needs at least two stored patterns")
    g = memories @ memories.transpose(-1, -2)  # (..., M, M)
    diag = torch.diagonal(g, dim1=-2, dim2=-1)
    off = g.masked_fill(torch.eye(g.shape[-1], dtype=torch.bool, device=g.device), -math.inf)
    return diag - off.amax(-1)
