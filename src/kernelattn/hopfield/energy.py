"""The Hopfield–Fenchel–Young energy that every retrieval step decreases.

``E(q) = −Ω*(βXq)/β + Ψ(q) + c``, with ``Ω*`` the conjugate of the mapping's
regulariser (log-sum-exp for softmax), ``Ψ`` given by the post-transform
(:mod:`kernelattn.hopfield.post`) and ``c`` a constant of ``X`` and ``β`` only, chosen so
that ``E ≥ 0``: since ``Ω* (θ) ≤ max_{p∈C} ⟨p, θ⟩ − Ω(uniform)`` and
``max_{p∈C} ⟨p, Xq⟩ ≤ s·M·||q||`` (``s = Σp``, ``M = max ||x_i||``),
``c = −Ω(uniform)/β + ½(sM)²`` for the identity and ``c = −Ω(uniform)/β + sMR`` for
the normalising posts (``R`` the largest ``||q||`` they allow). This matches the
papers' form ``−FY_Ω(uniform; βXq)/β − qᵀx̄ + ...`` up to the choice of constant.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .mappings import HopfieldMapping, resolve_hopfield_mapping
from .post import post_bound, post_psi, resolve_post
from .retrieval import check_states

__all__ = ["hopfield_energy"]


def hopfield_energy(memories: Tensor, queries: Tensor, mapping: str | HopfieldMapping = "softmax",
                    beta: float = 1.0, post: str | Callable[[Tensor], Tensor] = "identity",
                    mask: Tensor | None = None) -> Tensor:
    """Energy of each query state under the memory ``X``.

    Args:
        memories: stored patterns ``X``, ``(..., M, d)``.
        queries: states ``q``, ``(..., Q, d)`` (leading dims broadcast with ``memories``).
        mapping: a Hopfield mapping name (see :func:`resolve_hopfield_mapping`).
        beta: inverse temperature ``β > 0``.
        post: ``identity``, ``l2`` or ``layernorm`` — the post-transform whose ``Ψ``
            enters the energy (``+inf`` for a state outside the set the normalising
            posts map to).
        mask: optional boolean ``(..., M)`` (or broadcastable to the scores
            ``(..., Q, M)``), True = pattern is stored / takes part.

    Returns:
        ``(..., Q)`` energies, ``>= 0``. A state whose patterns are all masked has
        ``+inf`` energy: with nothing stored, ``Ω*`` is a max over an empty set (``−inf``),
        and the update retrieves zeros there (:func:`hopfield_retrieve`).
    """
    check_states(memories, queries, beta, mask)
    hm = resolve_hopfield_mapping(mapping)
    name, _ = resolve_post(post)
    if name == "custom":
        raise ValueError("hopfield_energy needs a named post-transform (identity, l2, layernorm)")
    scores = beta * queries @ memories.transpose(-1, -2)  # (..., Q, M)
    empty = None
    if mask is not None:
        m = mask if mask.dim() == scores.dim() else mask.unsqueeze(-2)
        n = m.expand_as(scores).sum(-1).to(scores.dtype)
        empty = n == 0
        # rows with nothing stored get finite dummy scores (so no NaN), then +inf below
        scores = scores.masked_fill(~m & ~empty[..., None], -math.inf)
        n = n.clamp_min(1)
    else:
        n = torch.full(scores.shape[:-1], float(scores.shape[-1]), dtype=scores.dtype, device=scores.device)
    conj = hm.conjugate(scores, dim=-1)
    big_m = memories.norm(dim=-1).amax(-1, keepdim=True)  # (..., 1)
    s = hm.total
    omega_u = hm.uniform_regularizer(n).to(scores)
    bound = post_bound(name, queries.shape[-1])
    const = (0.5 * (s * big_m) ** 2) if math.isinf(bound) else s * big_m * bound
    energy = -conj / beta + post_psi(queries, name) - omega_u / beta + const
    if empty is not None:
        energy = energy.masked_fill(empty, math.inf)
    return energy
