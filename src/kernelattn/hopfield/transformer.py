"""Transformer encoder and decoder layers around Hopfield associations.

The post-norm blocks of ``hopfield-layers``' ``transformer.py`` (and of
``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``): each association and
the feed-forward net are added to the residual stream, then LayerNorm'ed. The
associations are deep copies of the :class:`Hopfield` modules passed in, so one
configured layer can seed many blocks; any mapping (sparsemax, entmax, normmax...) works.
"""

from __future__ import annotations

from copy import deepcopy

import torch
from torch import Tensor, nn

from .layers import Hopfield

__all__ = ["HopfieldEncoderLayer", "HopfieldDecoderLayer"]


def _activation(name: str):
    fn = getattr(torch, name, None) if isinstance(name, str) else None
    if not callable(fn):
        raise ValueError(f"activation must name a torch function (e.g. 'relu', 'tanh'), got {name!r}")
    return fn


def _check_association(hop, what: str) -> int:
    if not isinstance(hop, Hopfield):
        raise ValueError(f"{what} must be a kernelattn.hopfield.Hopfield, got {type(hop).__name__}")
    if hop.input_size is None or hop.output_size != hop.input_size:
        raise ValueError(f"{what} must map input_size to the same output_size for the residual connection "
                         f"(got input_size={hop.input_size}, output_size={hop.output_size})")
    return hop.input_size


def _add_feed_forward(layer: nn.Module, size: int, dim_feedforward: int, dropout: float, activation: str) -> None:
    # Flat attribute names, as in hopfield-layers, so its state dicts keep their keys.
    layer.linear_residual = nn.Linear(size, dim_feedforward)
    layer.dropout_residual = nn.Dropout(dropout)
    layer.linear_output = nn.Linear(dim_feedforward, size)
    layer.activation_residual = _activation(activation)


def _feed_forward(layer: nn.Module, x: Tensor) -> Tensor:
    return layer.linear_output(layer.dropout_residual(layer.activation_residual(layer.linear_residual(x))))


class HopfieldEncoderLayer(nn.Module):
    """Self-association + feed-forward, each with residual, dropout and post-LayerNorm.

    Args:
        hopfield_association: a :class:`Hopfield` with ``output_size == input_size``
            (copied).
        dim_feedforward: hidden size of the feed-forward net.
        dropout: dropout on the association output, inside and after the feed-forward net.
        activation: name of a ``torch`` function for the feed-forward net.

    Shapes: ``forward(src (B, L, E), src_mask, src_key_padding_mask (B, L))`` returns
    ``(B, L, E)`` (``(L, B, E)`` if the association is not ``batch_first``); ``src_mask`` is
    an ``association_mask`` of :meth:`Hopfield.forward`.
    """

    def __init__(self, hopfield_association: Hopfield, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str = "relu"):
        super().__init__()
        size = _check_association(hopfield_association, "hopfield_association")
        self.hopfield_association = deepcopy(hopfield_association)
        _add_feed_forward(self, size, dim_feedforward, dropout, activation)
        self.norm_residual = nn.LayerNorm(size)
        self.norm_output = nn.LayerNorm(size)
        self.dropout_hopfield_association = nn.Dropout(dropout)
        self.dropout_output = nn.Dropout(dropout)

    def forward(self, src: Tensor, src_mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None) -> Tensor:
        assoc = self.hopfield_association(src, stored_pattern_padding_mask=src_key_padding_mask,
                                          association_mask=src_mask)
        src = self.norm_residual(src + self.dropout_hopfield_association(assoc))
        return self.norm_output(src + self.dropout_output(_feed_forward(self, src)))

    def get_association_matrix(self, input: Tensor | tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """Weights ``(B, H, L, S')`` of the self-association (no grad)."""
        return self.hopfield_association.get_association_matrix(input)

    @property
    def batch_first(self) -> bool:
        return self.hopfield_association.batch_first

    @property
    def input_size(self) -> int:
        return self.hopfield_association.input_size

    @property
    def output_size(self) -> int:
        return self.hopfield_association.input_size


class HopfieldDecoderLayer(nn.Module):
    """Self-association, cross-association with a memory, feed-forward; each post-normed.

    Args:
        hopfield_association_self: :class:`Hopfield` over the target (copied).
        hopfield_association_cross: :class:`Hopfield` whose stored patterns and pattern
            projections are the memory and whose states are the target (copied).
        dim_feedforward, dropout, activation: as :class:`HopfieldEncoderLayer`.

    Shapes: ``forward(tgt (B, L, E), memory (B, S, E_m), tgt_mask, memory_mask,
    tgt_key_padding_mask (B, L), memory_key_padding_mask (B, S))`` returns ``(B, L, E)``.
    """

    def __init__(self, hopfield_association_self: Hopfield, hopfield_association_cross: Hopfield,
                 dim_feedforward: int = 2048, dropout: float = 0.1, activation: str = "relu"):
        super().__init__()
        size = _check_association(hopfield_association_self, "hopfield_association_self")
        if _check_association(hopfield_association_cross, "hopfield_association_cross") != size:
            raise ValueError(f"hopfield_association_cross must take states of size {size} "
                             f"(got input_size={hopfield_association_cross.input_size})")
        self.hopfield_association_self = deepcopy(hopfield_association_self)
        self.hopfield_association_cross = deepcopy(hopfield_association_cross)
        _add_feed_forward(self, size, dim_feedforward, dropout, activation)
        self.norm_residual_self = nn.LayerNorm(size)
        self.norm_residual_cross = nn.LayerNorm(size)
        self.norm_output = nn.LayerNorm(size)
        self.dropout_hopfield_association_self = nn.Dropout(dropout)
        self.dropout_hopfield_association_cross = nn.Dropout(dropout)
        self.dropout_output = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                memory_mask: Tensor | None = None, tgt_key_padding_mask: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None) -> Tensor:
        assoc = self.hopfield_association_self(tgt, stored_pattern_padding_mask=tgt_key_padding_mask,
                                               association_mask=tgt_mask)
        tgt = self.norm_residual_self(tgt + self.dropout_hopfield_association_self(assoc))
        assoc = self.hopfield_association_cross((memory, tgt, memory),
                                                stored_pattern_padding_mask=memory_key_padding_mask,
                                                association_mask=memory_mask)
        tgt = self.norm_residual_cross(tgt + self.dropout_hopfield_association_cross(assoc))
        return self.norm_output(tgt + self.dropout_output(_feed_forward(self, tgt)))

    def get_association_matrix_self(self, input: Tensor | tuple[Tensor, Tensor, Tensor]) -> Tensor:
        return self.hopfield_association_self.get_association_matrix(input)

    def get_association_matrix_cross(self, input: Tensor | tuple[Tensor, Tensor, Tensor]) -> Tensor:
        return self.hopfield_association_cross.get_association_matrix(input)

    @property
    def batch_first(self) -> bool:
        return self.hopfield_association_self.batch_first

    @property
    def input_size(self) -> int:
        return self.hopfield_association_self.input_size

    @property
    def output_size(self) -> int:
        return self.hopfield_association_self.input_size
