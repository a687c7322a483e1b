"""Hopfield layers with learned patterns: pooling (learned states) and lookup (learned memory).

Both wrap a :class:`~kernelattn.hopfield.layers.Hopfield` (``self.hopfield``) and take
the same arguments as ``hopfield-layers``' ``HopfieldPooling`` / ``HopfieldLayer``: the
first eight positionally (``input_size, hidden_size, output_size, pattern_size,
num_heads, scaling, update_steps_max, update_steps_eps``), every other
:class:`Hopfield` argument by keyword.

* :class:`HopfieldPooling` — ``quantity`` learned state patterns pool a set; the
  multiple-instance-learning layer.
* :class:`HopfieldLayer` — ``quantity`` learned stored patterns (and optionally separate
  learned targets) answer the input's states: a trainable lookup memory.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .layers import Hopfield

__all__ = ["HopfieldPooling", "HopfieldLayer"]


def _init_(weight: Tensor, init_std: float | None) -> None:
    """hopfield-layers' ``normal(0, 0.02)``; ``None``: ``normal(0, 1/sqrt(size))`` (unit-norm rows)."""
    with torch.no_grad():
        weight.normal_(0.0, init_std if init_std is not None else 1.0 / math.sqrt(weight.shape[-1]))


def _check_quantity(quantity) -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise ValueError(f"quantity must be an integer >= 1, got {quantity!r}")
    return quantity


class _WrappedHopfield(nn.Module):
    """A layer that feeds its own (stored, state, projection) triple to an inner ``Hopfield``."""

    hopfield: Hopfield

    def _prepare_input(self, input):  # (B, S, ·), (B, L, ·), (B, S, ·) in batch-first layout
        raise NotImplementedError

    def _run(self, input, stored_pattern_padding_mask, association_mask, what: str):
        hop = self.hopfield
        bf, hop.batch_first = hop.batch_first, True
        try:
            data = self._prepare_input(input)
            if what == "forward":
                return hop(data, stored_pattern_padding_mask=stored_pattern_padding_mask,
                           association_mask=association_mask, return_weights=True)
            getter = hop.get_association_matrix if what == "weights" else hop.get_projected_pattern_matrix
            return getter(data, stored_pattern_padding_mask, association_mask)
        finally:
            hop.batch_first = bf


class HopfieldPooling(_WrappedHopfield):
    """Pool a set with ``quantity`` learned state patterns (multiple-instance learning).

    Args:
        input_size, hidden_size, output_size, pattern_size, num_heads, scaling,
            update_steps_max, update_steps_eps: as :class:`Hopfield`.
        quantity: number of learned state patterns; the output concatenates their retrievals.
        trainable: the state patterns are learned (``requires_grad``).
        init_std: std of their normal initialisation — 0.02 as in hopfield-layers; ``None``
            gives ``1/sqrt(size)`` (the default input LayerNorm makes the two equivalent;
            without it, 0.02 starts every state near zero, i.e. near-uniform weights).
        **kwargs: any other :class:`Hopfield` argument (``mapping``, ``alpha_learnable``,
            ``normalize_*``, ``*_as_static``, ``dropout``, ``post``...).

    The learned states have size ``hidden_size`` when ``state_pattern_as_static`` (as in
    hopfield-layers), else ``input_size``.

    Shapes: ``forward(input, stored_pattern_padding_mask=(B, S))`` with ``input`` a
    ``(B, S, E)`` tensor (stored patterns = pattern projections) or a
    ``(stored_pattern (B, S, E), pattern_projection (B, S, E_p))`` tuple (``(S, B, …)``
    each if not ``batch_first``) returns ``(B, quantity * output_size)``.
    """

    def __init__(self, input_size: int, hidden_size: int | None = None, output_size: int | None = None,
                 pattern_size: int | None = None, num_heads: int = 1, scaling: float | Tensor | None = None,
                 update_steps_max: int | Tensor | None = 0, update_steps_eps: float | Tensor = 1e-4, *,
                 quantity: int = 1, trainable: bool = True, init_std: float | None = 0.02, **kwargs):
        super().__init__()
        self.quantity = _check_quantity(quantity)
        self.hopfield = Hopfield(input_size, hidden_size, output_size, pattern_size, num_heads, scaling,
                                 update_steps_max, update_steps_eps, **kwargs)
        size = self.hopfield.hidden_size if self.hopfield.state_pattern_as_static else input_size
        self.pooling_weights = nn.Parameter(torch.empty(1, quantity, size), requires_grad=trainable)
        self.init_std = init_std
        _init_(self.pooling_weights, init_std)

    @property
    def output_size(self) -> int:
        return self.quantity * self.hopfield.output_size

    @property
    def batch_first(self) -> bool:
        return self.hopfield.batch_first

    def _prepare_input(self, input: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """``(stored, states, projections)``, batch first."""
        if isinstance(input, Tensor):
            stored = projection = input
        elif isinstance(input, (tuple, list)) and len(input) == 2:
            stored, projection = input
        else:
            raise ValueError("HopfieldPooling input must be a tensor or a (stored_pattern, pattern_projection) tuple")
        if not self.hopfield.batch_first:
            stored, projection = stored.transpose(0, 1), projection.transpose(0, 1)
        state = self.pooling_weights.expand(stored.shape[0], -1, -1)
        return stored, state, projection

    def forward(self, input: Tensor | tuple[Tensor, Tensor], stored_pattern_padding_mask: Tensor | None = None,
                association_mask: Tensor | None = None,
                return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Pool; returns ``(B, quantity * output_size)`` and, if asked, weights ``(B, H, quantity, S')``."""
        out, w = self._run(input, stored_pattern_padding_mask, association_mask, "forward")
        out = out.reshape(out.shape[0], -1)  # (B, quantity * output_size)
        return (out, w) if return_weights else out

    def get_association_matrix(self, input, stored_pattern_padding_mask=None, association_mask=None) -> Tensor:
        """Pooling weights ``(B, num_heads, quantity, S')`` (no grad)."""
        return self._run(input, stored_pattern_padding_mask, association_mask, "weights")

    def get_projected_pattern_matrix(self, input, stored_pattern_padding_mask=None, association_mask=None) -> Tensor:
        """Projected pattern projections ``(B, num_heads, S', pattern_size)`` (no grad)."""
        return self._run(input, stored_pattern_padding_mask, association_mask, "values")


class HopfieldLayer(_WrappedHopfield):
    """A trainable lookup memory: ``quantity`` learned stored patterns answer the input's states.

    Args:
        input_size, hidden_size, output_size, pattern_size, num_heads, scaling,
            update_steps_max, update_steps_eps: as :class:`Hopfield`.
        lookup_weights_as_separated: learn separate targets (pattern projections) instead
            of reusing the lookup patterns.
        lookup_targets_as_trainable: the separate targets are learned (``requires_grad``).
        quantity: number of learned stored patterns.
        trainable: the lookup patterns are learned (``requires_grad``).
        init_std: std of their normal initialisation (0.02 as in hopfield-layers; ``None``
            gives ``1/sqrt(size)``).
        **kwargs: any other :class:`Hopfield` argument.

    The lookup patterns have size ``hidden_size`` when ``stored_pattern_as_static``, else
    ``stored_pattern_size`` (default ``input_size``); targets ``pattern_projection_size``
    (default: the lookup patterns' size).

    Shapes: ``forward(input (B, L, input_size), stored_pattern_padding_mask=(B, quantity))``
    returns ``(B, L, output_size)`` (``(L, B, …)`` if not ``batch_first``).
    """

    def __init__(self, input_size: int, hidden_size: int | None = None, output_size: int | None = None,
                 pattern_size: int | None = None, num_heads: int = 1, scaling: float | Tensor | None = None,
                 update_steps_max: int | Tensor | None = 0, update_steps_eps: float | Tensor = 1e-4,
                 lookup_weights_as_separated: bool = False, lookup_targets_as_trainable: bool = True, *,
                 quantity: int = 1, trainable: bool = True, init_std: float | None = 0.02, **kwargs):
        super().__init__()
        self.quantity = _check_quantity(quantity)
        self.hopfield = Hopfield(input_size, hidden_size, output_size, pattern_size, num_heads, scaling,
                                 update_steps_max, update_steps_eps, **kwargs)
        hop = self.hopfield
        size = hop.hidden_size if hop.stored_pattern_as_static else hop.stored_pattern_size
        self.lookup_weights = nn.Parameter(torch.empty(1, quantity, size), requires_grad=trainable)
        _init_(self.lookup_weights, init_std)
        if lookup_weights_as_separated:
            t_size = kwargs.get("pattern_projection_size") or size
            self.target_weights = nn.Parameter(torch.empty(1, quantity, t_size),
                                               requires_grad=lookup_targets_as_trainable)
            _init_(self.target_weights, init_std)
        else:
            self.register_parameter("target_weights", None)

    @property
    def output_size(self) -> int:
        return self.hopfield.output_size

    @property
    def batch_first(self) -> bool:
        return self.hopfield.batch_first

    def _prepare_input(self, input: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not isinstance(input, Tensor) or input.dim() != 3:
            raise ValueError(f"HopfieldLayer input must be a (B, L, E) tensor ((L, B, E) if not batch_first), got "
                             f"{getattr(input, 'shape', type(input).__name__)}")
        state = input if self.hopfield.batch_first else input.transpose(0, 1)
        b = state.shape[0]
        stored = self.lookup_weights.expand(b, -1, -1)
        targets = stored if self.target_weights is None else self.target_weights.expand(b, -1, -1)
        return stored, state, targets

    def forward(self, input: Tensor, stored_pattern_padding_mask: Tensor | None = None,
                association_mask: Tensor | None = None,
                return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Look up; returns ``(B, L, output_size)`` and, if asked, weights ``(B, H, L, quantity')``."""
        out, w = self._run(input, stored_pattern_padding_mask, association_mask, "forward")
        if not self.hopfield.batch_first:
            out = out.transpose(0, 1)
        return (out, w) if return_weights else out

    def get_association_matrix(self, input, stored_pattern_padding_mask=None, association_mask=None) -> Tensor:
        """Lookup weights ``(B, num_heads, L, quantity')`` (no grad)."""
        return self._run(input, stored_pattern_padding_mask, association_mask, "weights")

    def get_projected_pattern_matrix(self, input, stored_pattern_padding_mask=None, association_mask=None) -> Tensor:
        """Projected targets ``(B, num_heads, quantity', pattern_size)`` (no grad)."""
        return self._run(input, stored_pattern_padding_mask, association_mask, "values")
