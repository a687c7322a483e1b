"""Hopfield layers with any Hopfield–Fenchel–Young mapping (and learnable α).

Argument names follow the ``hopfield-layers`` library (Ramsauer et al.) so its users can
switch: ``scaling`` is β, ``update_steps_max`` the number of extra state updates,
``*_as_static`` skips a projection, ``stored_pattern_padding_mask`` uses True = padding.
The association is ``mapping(β · Q Kᵀ) V`` per head, with ``mapping`` any name of
:func:`resolve_hopfield_mapping`.

* :class:`Hopfield` — associate state patterns (queries) with stored patterns (keys) and
  retrieve pattern projections (values); ``input`` is one tensor (self-association) or a
  tuple ``(stored_pattern, state_pattern, pattern_projection)``.
* :class:`HopfieldPooling` — learned state patterns (``quantity`` queries) pool a set;
  the multiple-instance-learning layer.
* :class:`HopfieldLayer` — learned stored patterns: a trainable lookup memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mappings import HopfieldMapping, resolve_hopfield_mapping

__all__ = ["Hopfield", "HopfieldPooling", "HopfieldLayer", "HopfieldAssociation"]


class HopfieldAssociation(nn.Module):
    """A Hopfield mapping over the last dim, with an optional learnable α per head.

    Args:
        mapping: a Hopfield mapping name or object.
        num_heads: heads, for a per-head α on scores ``(B, H, L, S)``.
        alpha_learnable: learn α (entmax and normmax kinds only) as
            ``α = 1 + softplus(θ)``, initialised at the mapping's α.
    """

    def __init__(self, mapping: str | HopfieldMapping = "softmax", num_heads: int = 1,
                 alpha_learnable: bool = False):
        super().__init__()
        self.mapping = resolve_hopfield_mapping(mapping)
        self.alpha_learnable = alpha_learnable
        if alpha_learnable:
            a = self.mapping.alpha
            if self.mapping.kind == "ksubsets" or a is None or a <= 1.0:
                raise ValueError(f"alpha_learnable needs an entmax:<alpha> or normmax:<alpha> mapping with "
                                 f"alpha > 1 (got {self.mapping.name!r}); e.g. mapping='entmax:1.5'")
            am1 = torch.full((1, num_heads, 1, 1), a - 1.0)
            self.alpha_raw = nn.Parameter(am1 + torch.log(-torch.expm1(-am1)))  # inverse softplus

    @property
    def alpha(self) -> Tensor | float | None:
        """Current α: a ``(1, H, 1, 1)`` tensor when learnable, else the mapping's float."""
        if self.alpha_learnable:
            return 1 + F.softplus(self.alpha_raw)
        return self.mapping.alpha

    def forward(self, scores: Tensor) -> Tensor:
        if self.alpha_learnable:
            a = self.alpha
            if scores.dim() != 4:
                raise ValueError(f"learnable alpha expects scores (B, H, L, S), got {tuple(scores.shape)}")
            return self.mapping(scores, -1, a.to(scores.dtype))
        return self.mapping(scores, -1)

    def extra_repr(self) -> str:
        return f"mapping={self.mapping.name}, alpha_learnable={self.alpha_learnable}"


def _maybe_norm(size: int, on: bool, affine: bool) -> nn.Module:
    return nn.LayerNorm(size, elementwise_affine=affine) if on else nn.Identity()


class Hopfield(nn.Module):
    """Hopfield association layer (``hopfield-layers``-style arguments).

    Args:
        input_size: size of the state patterns (queries) — and of stored patterns and
            pattern projections unless ``stored_pattern_size`` / ``pattern_projection_size``.
        hidden_size: per-head size of the association space (default ``input_size // num_heads``).
        output_size: size of the output (default ``input_size``).
        pattern_size: per-head size of the retrieved pattern projections (default
            ``hidden_size``).
        num_heads: parallel associations.
        scaling: β multiplying the scores (default ``1/sqrt(hidden_size)``).
        update_steps_max: extra updates of the state in the association space,
            ``ξ ← mapping(β ξ Kᵀ) K``, before the final retrieval (0 = one-step attention).
        update_steps_eps: stop the extra updates once no state moves more than this.
        mapping: any Hopfield mapping name (``softmax``, ``sparsemax``, ``entmax15``,
            ``entmax:<alpha>``, ``normmax:<alpha>``, ``ksubsets:<k>``).
        alpha_learnable: learn α per head (entmax/normmax kinds).
        normalize_stored_pattern, normalize_state_pattern, normalize_pattern_projection:
            LayerNorm the raw inputs first; the ``*_affine`` flags give it parameters.
        stored_pattern_as_static, state_pattern_as_static, pattern_projection_as_static:
            use the (normalised) input as is instead of a linear projection (its size
            must then be ``num_heads * hidden_size``, resp. ``num_heads * pattern_size``).
        stored_pattern_size, pattern_projection_size: input sizes when they differ
            from ``input_size``.
        batch_first: inputs are ``(B, L, E)``; else ``(L, B, E)``.
        dropout: dropout on the association weights.
        input_bias: bias in the input projections.
        disable_out_projection: return the concatenated heads without the output Linear.
    """

    def __init__(self, input_size: int | None = None, hidden_size: int | None = None,
                 output_size: int | None = None, pattern_size: int | None = None, num_heads: int = 1,
                 scaling: float | None = None, update_steps_max: int = 0, update_steps_eps: float = 1e-4,
                 mapping: str | HopfieldMapping = "softmax", alpha_learnable: bool = False,
                 normalize_stored_pattern: bool = True, normalize_stored_pattern_affine: bool = True,
                 normalize_state_pattern: bool = True, normalize_state_pattern_affine: bool = True,
                 normalize_pattern_projection: bool = True, normalize_pattern_projection_affine: bool = True,
                 stored_pattern_as_static: bool = False, state_pattern_as_static: bool = False,
                 pattern_projection_as_static: bool = False, stored_pattern_size: int | None = None,
                 pattern_projection_size: int | None = None, batch_first: bool = True, dropout: float = 0.0,
                 input_bias: bool = True, disable_out_projection: bool = False):
        super().__init__()
        if input_size is None or input_size < 1:
            raise ValueError(f"input_size must be a positive integer, got {input_size!r}")
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        if update_steps_max < 0:
            raise ValueError(f"update_steps_max must be >= 0, got {update_steps_max}")
        hidden_size = hidden_size or max(1, input_size // num_heads)
        pattern_size = pattern_size or hidden_size
        output_size = output_size or input_size
        stored_pattern_size = stored_pattern_size or input_size
        pattern_projection_size = pattern_projection_size or input_size
        self.num_heads, self.hidden_size, self.pattern_size = num_heads, hidden_size, pattern_size
        self.input_size, self.output_size = input_size, output_size
        self.scaling = float(scaling) if scaling is not None else 1.0 / math.sqrt(hidden_size)
        self.update_steps_max, self.update_steps_eps = int(update_steps_max), float(update_steps_eps)
        self.batch_first = batch_first
        hd, pd = num_heads * hidden_size, num_heads * pattern_size

        def proj(size_in: int, size_out: int, static: bool, what: str) -> nn.Module:
            if not static:
                return nn.Linear(size_in, size_out, bias=input_bias)
            if size_in != size_out:
                raise ValueError(f"{what}_as_static needs its input size ({size_in}) to equal "
                                 f"num_heads * {'pattern' if what == 'pattern_projection' else 'hidden'}_size "
                                 f"({size_out})")
            return nn.Identity()

        self.norm_stored = _maybe_norm(stored_pattern_size, normalize_stored_pattern, normalize_stored_pattern_affine)
        self.norm_state = _maybe_norm(input_size, normalize_state_pattern, normalize_state_pattern_affine)
        self.norm_projection = _maybe_norm(pattern_projection_size, normalize_pattern_projection,
                                           normalize_pattern_projection_affine)
        self.k_proj = proj(stored_pattern_size, hd, stored_pattern_as_static, "stored_pattern")
        self.q_proj = proj(input_size, hd, state_pattern_as_static, "state_pattern")
        self.v_proj = proj(pattern_projection_size, pd, pattern_projection_as_static, "pattern_projection")
        self.out_proj = nn.Identity() if disable_out_projection else nn.Linear(pd, output_size, bias=input_bias)
        if disable_out_projection:
            self.output_size = pd
        self.association = HopfieldAssociation(mapping, num_heads, alpha_learnable)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: Tensor, size: int) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, size).transpose(1, 2)  # (B, H, n, size)

    def forward(self, input: Tensor | tuple[Tensor, Tensor, Tensor],
                stored_pattern_padding_mask: Tensor | None = None, association_mask: Tensor | None = None,
                return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Associate and retrieve.

        Args:
            input: ``(B, L, E)`` (self-association) or ``(stored_pattern (B, S, E_s),
                state_pattern (B, L, E), pattern_projection (B, S, E_p))``.
            stored_pattern_padding_mask: ``(B, S)`` bool, **True = padding** (ignored),
                as in ``hopfield-layers`` / ``nn.MultiheadAttention``.
            association_mask: ``(L, S)`` or ``(B, L, S)`` bool, **True = not allowed**.
            return_weights: also return the association weights ``(B, H, L, S)``.

        Returns:
            ``(B, L, output_size)`` (``(L, B, ...)`` if not ``batch_first``), and the
            weights if asked. A state with every stored pattern masked gets zeros.
        """
        if isinstance(input, Tensor):
            stored, state, projection = input, input, input
        else:
            if len(input) != 3:
                raise ValueError("input must be a tensor or a (stored_pattern, state_pattern, "
                                 "pattern_projection) tuple")
            stored, state, projection = input
        if not self.batch_first:
            stored, state, projection = (t.transpose(0, 1) for t in (stored, state, projection))
        if stored.shape[:2] != projection.shape[:2]:
            raise ValueError(f"stored_pattern {tuple(stored.shape)} and pattern_projection "
                             f"{tuple(projection.shape)} must share (batch, set size)")
        k = self._heads(self.k_proj(self.norm_stored(stored)), self.hidden_size)  # (B, H, S, hd)
        q = self._heads(self.q_proj(self.norm_state(state)), self.hidden_size)  # (B, H, L, hd)
        v = self._heads(self.v_proj(self.norm_projection(projection)), self.pattern_size)  # (B, H, S, pd)
        k = k.expand(q.shape[0], *k.shape[1:]) if k.shape[0] == 1 else k
        v = v.expand(q.shape[0], *v.shape[1:]) if v.shape[0] == 1 else v
        q = q.expand(k.shape[0], *q.shape[1:]) if q.shape[0] == 1 else q
        blocked = None
        if stored_pattern_padding_mask is not None:
            blocked = stored_pattern_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        if association_mask is not None:
            am = association_mask.bool()
            am = am[None, None] if am.dim() == 2 else am[:, None]
            blocked = am if blocked is None else (blocked | am)

        def weights(state_: Tensor) -> Tensor:
            s = self.scaling * state_ @ k.transpose(-1, -2)  # (B, H, L, S)
            if blocked is not None:
                s = s.masked_fill(blocked, -math.inf)
            return self.association(s)

        for _ in range(self.update_steps_max):
            q_new = weights(q) @ k
            moved = (q_new - q).detach().abs().amax()
            q = q_new
            if moved <= self.update_steps_eps:
                break
        w = weights(q)
        out = self.dropout(w) @ v  # (B, H, L, pd)
        out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)  # (B, L, H*pd)
        out = self.out_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return (out, w) if return_weights else out


class HopfieldPooling(nn.Module):
    """Pool a set with ``quantity`` learned state patterns (multiple-instance learning).

    Args:
        input_size: size of the set elements (stored patterns and projections).
        quantity: number of learned queries; the output concatenates their retrievals.
        trainable: the queries are parameters (else a fixed random buffer).
        **kwargs: any :class:`Hopfield` argument (``hidden_size``, ``output_size``,
            ``num_heads``, ``scaling``, ``update_steps_max``, ``mapping``,
            ``alpha_learnable``, ``normalize_*``, ``*_as_static``, ``dropout``, ...).

    Shapes: ``forward(input (B, S, input_size), stored_pattern_padding_mask=(B, S))``
    returns ``(B, quantity * output_size)``.
    """

    def __init__(self, input_size: int, quantity: int = 1, trainable: bool = True, **kwargs):
        super().__init__()
        if quantity < 1:
            raise ValueError(f"quantity must be >= 1, got {quantity}")
        kwargs.setdefault("batch_first", True)
        self.hopfield = Hopfield(input_size=input_size, **kwargs)
        init = torch.randn(1, quantity, input_size) / math.sqrt(input_size)
        if trainable:
            self.pooling_weights = nn.Parameter(init)
        else:
            self.register_buffer("pooling_weights", init)
        self.quantity = quantity

    @property
    def output_size(self) -> int:
        return self.quantity * self.hopfield.output_size

    def forward(self, input: Tensor, stored_pattern_padding_mask: Tensor | None = None,
                return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if not self.hopfield.batch_first:
            input = input.transpose(0, 1)
        b = input.shape[0]
        state = self.pooling_weights.expand(b, -1, -1)
        hop = self.hopfield
        bf, hop.batch_first = hop.batch_first, True
        try:
            out = hop((input, state, input), stored_pattern_padding_mask=stored_pattern_padding_mask,
                      return_weights=return_weights)
        finally:
            hop.batch_first = bf
        if return_weights:
            out, w = out
            return out.reshape(b, -1), w
        return out.reshape(b, -1)  # (B, quantity * output_size)


class HopfieldLayer(nn.Module):
    """A trainable lookup memory: learned stored patterns answer the input's states.

    Args:
        input_size: size of the state patterns (and of the learned lookup patterns).
        quantity: number of learned stored patterns.
        lookup_weights_as_separated: learn separate targets (pattern projections) instead
            of reusing the lookup patterns.
        lookup_targets_as_trainable: the separate targets are parameters (else fixed).
        **kwargs: any :class:`Hopfield` argument.

    Shapes: ``forward(input (B, L, input_size))`` returns ``(B, L, output_size)``.
    """

    def __init__(self, input_size: int, quantity: int = 1, lookup_weights_as_separated: bool = False,
                 lookup_targets_as_trainable: bool = True, **kwargs):
        super().__init__()
        if quantity < 1:
            raise ValueError(f"quantity must be >= 1, got {quantity}")
        self.hopfield = Hopfield(input_size=input_size, **kwargs)
        self.lookup_weights = nn.Parameter(torch.randn(1, quantity, input_size) / math.sqrt(input_size))
        self.separated = lookup_weights_as_separated
        if lookup_weights_as_separated:
            targets = torch.randn(1, quantity, input_size) / math.sqrt(input_size)
            if lookup_targets_as_trainable:
                self.target_weights = nn.Parameter(targets)
            else:
                self.register_buffer("target_weights", targets)

    @property
    def output_size(self) -> int:
        return self.hopfield.output_size

    def forward(self, input: Tensor, association_mask: Tensor | None = None,
                return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        state = input if self.hopfield.batch_first else input.transpose(0, 1)
        b = state.shape[0]
        stored = self.lookup_weights.expand(b, -1, -1)
        targets = (self.target_weights if self.separated else self.lookup_weights).expand(b, -1, -1)
        hop = self.hopfield
        bf, hop.batch_first = hop.batch_first, True
        try:
            out = hop((stored, state, targets), association_mask=association_mask, return_weights=return_weights)
        finally:
            hop.batch_first = bf
        if return_weights:
            out, w = out
            return (out if bf else out.transpose(0, 1)), w
        return out if bf else out.transpose(0, 1)
