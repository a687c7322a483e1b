"""Post-transforms of the Hopfield update, each the gradient of a convex ``Ψ*``.

The update ``q ← post(Xᵀ ŷ(βXq))`` is the concave–convex step of the energy
``E(q) = −Ω*(βXq)/β + Ψ(q)`` when ``post = ∇Ψ*``, i.e. ``post(v) = argmax_q ⟨q, v⟩ − Ψ(q)``:

* ``identity``: ``Ψ(q) = ½||q||²``.
* ``l2`` (ℓ2-normalisation ``v/||v||``): ``Ψ`` the indicator of the unit ball.
* ``layernorm`` (``(v − mean v)/std v``, no affine): ``Ψ`` the indicator of
  ``{q : Σq = 0, ||q|| ≤ √d}``.

The indicators make the energy ``+inf`` off their set, so a raw query that is not yet
normalised starts at ``+inf`` and every later iterate is finite.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["POSTS", "resolve_post", "post_psi", "post_bound"]

POSTS = ("identity", "l2", "layernorm")
_ALIASES = {"none": "identity", "normalize": "l2", "normalization": "l2", "l2norm": "l2",
            "layer_norm": "layernorm", "layer_normalization": "layernorm", "ln": "layernorm"}
_FEASIBLE_TOL = 1e-5


def _l2(v: Tensor) -> Tensor:
    return F.normalize(v, dim=-1, eps=1e-12)


def _layernorm(v: Tensor) -> Tensor:
    return F.layer_norm(v, v.shape[-1:], eps=1e-12)


_FUNCS: dict[str, Callable[[Tensor], Tensor]] = {"identity": lambda v: v, "l2": _l2, "layernorm": _layernorm}


def resolve_post(post: str | Callable[[Tensor], Tensor] | None) -> tuple[str, Callable[[Tensor], Tensor]]:
    """Return ``(name, function)`` for a post-transform name or a callable (name ``"custom"``).

    Raises:
        ValueError: unknown name.
    """
    if post is None:
        return "identity", _FUNCS["identity"]
    if callable(post):
        return "custom", post
    if not isinstance(post, str):
        raise ValueError(f"post must be a name or a callable, got {type(post).__name__}")
    name = _ALIASES.get(post.strip().lower(), post.strip().lower())
    if name not in _FUNCS:
        raise ValueError(f"unknown post-transform {post!r}; choose one of: {', '.join(POSTS)}")
    return name, _FUNCS[name]


def post_psi(q: Tensor, name: str) -> Tensor:
    """``Ψ(q)`` per query (last dim reduced): ``½||q||²``, or 0 / ``+inf`` for the indicators."""
    if name == "identity":
        return 0.5 * (q * q).sum(-1)
    norm = q.norm(dim=-1)
    if name == "l2":
        ok = norm <= 1 + _FEASIBLE_TOL
    elif name == "layernorm":
        d = q.shape[-1]
        scale = math.sqrt(d)
        ok = (norm <= scale * (1 + _FEASIBLE_TOL)) & (q.mean(-1).abs() <= _FEASIBLE_TOL * max(1.0, scale))
    else:
        raise ValueError(f"no energy for post-transform {name!r} (only {', '.join(POSTS)})")
    return torch.where(ok, torch.zeros_like(norm), torch.full_like(norm, math.inf))


def post_bound(name: str, d: int) -> float:
    """Largest ``||q||`` on the domain of ``Ψ`` (``inf`` for identity)."""
    return {"identity": math.inf, "l2": 1.0, "layernorm": math.sqrt(d)}[name]
