"""Dense associative memories (Krotov & Hopfield, 2016; Demircigil et al., 2017): baselines.

``q ← tanh(β · Xᵀ F(Xq))`` with a separation function ``F`` applied entrywise to the
scores — ``poly:<n>`` (``F(s) = sⁿ``; ``poly:1`` is the classical Hopfield network) or
``exp`` / ``exp:<λ>`` (``F(s) = exp(λ s)``) — the continuous-state DAM that HFYN compares
with. Unlike
a Hopfield–Fenchel–Young update the weights ``F(Xq)`` are not a distribution, so the
``tanh`` is what keeps the state bounded (and binarises it when ``β`` is large).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_int, check_number
from .retrieval import check_states

__all__ = ["dam_retrieve", "DAM_KINDS"]

DAM_KINDS = ("poly:<n>", "exp", "exp:<lambda>")


def _separation(kind: str, inner_beta: float):
    if kind == "exp" or kind.startswith("exp:"):
        try:
            lam = inner_beta if kind == "exp" else float(kind.split(":", 1)[1])
        except ValueError:
            lam = math.nan
        if lam > 0:
            return lambda s: torch.exp(lam * s)
    if kind.startswith("poly:"):
        try:
            n = int(kind.split(":", 1)[1])
        except ValueError:
            n = 0
        if n >= 1:
            return lambda s: s.pow(n)
    raise ValueError(f"unknown DAM kind {kind!r}; choose poly:<n> (n >= 1, e.g. poly:10), exp or exp:<λ > 0>")


def dam_retrieve(memories: Tensor, queries: Tensor, kind: str = "poly:10", beta: float = 0.1,
                 inner_beta: float = 0.05, n_iter: int = 5) -> Tensor:
    """Retrieve with a dense associative memory.

    Args:
        memories: ``(..., M, d)`` stored patterns.
        queries: ``(..., Q, d)`` initial states.
        kind: separation function, ``poly:<n>``, ``exp`` (``λ = inner_beta``) or ``exp:<λ>``.
        beta: gain of the ``tanh`` (HFYN: 0.1).
        inner_beta: ``λ`` of ``exp`` (HFYN: 0.05).
        n_iter: updates (HFYN: 5).

    Returns:
        ``(..., Q, d)`` final states in ``(-1, 1)``.
    """
    check_states(memories, queries, beta)
    check_number(inner_beta, "inner_beta", positive=True, hint=" (λ of the exp separation)")
    n_iter = check_int(n_iter, "n_iter", minimum=1)
    if not isinstance(kind, str):
        raise ValueError(f"kind must be a string such as 'poly:10' or 'exp', got {type(kind).__name__}")
    f = _separation(kind, inner_beta)
    q = queries
    for _ in range(n_iter):
        q = torch.tanh(beta * (f(q @ memories.transpose(-1, -2)) @ memories))
    return q
