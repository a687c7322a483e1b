"""Associative memory as sparse kernel regression: Hopfield–Fenchel–Young networks.

Store patterns ``X``; retrieve from a corrupted query by iterating
``q ← post(Xᵀ mapping(β X q))`` (:func:`hopfield_retrieve`), which never increases
:func:`hopfield_energy`. Sparse mappings (sparsemax, α-entmax, normmax) land exactly on a
stored pattern once its margin is large enough; ``ksubsets:<k>`` retrieves an
association of k patterns. Layers (:class:`Hopfield`, :class:`HopfieldPooling`,
:class:`HopfieldLayer`) put the same association in a network; :class:`ContinuousMemory`
stores a long sequence in a few basis functions.
"""

from .continuous import BASES, ContinuousMemory, continuous_hopfield_retrieve
from .energy import hopfield_energy
from .layers import Hopfield, HopfieldAssociation, HopfieldLayer, HopfieldPooling
from .mappings import HOPFIELD_METHODS, HopfieldMapping, ksubsets, normmax, resolve_hopfield_mapping
from .post import POSTS
from .retrieval import Retrieval, hopfield_retrieve, hopfield_step, pattern_margins

__all__ = [
    "hopfield_retrieve", "hopfield_step", "hopfield_energy", "pattern_margins", "Retrieval",
    "normmax", "ksubsets", "HopfieldMapping", "resolve_hopfield_mapping", "HOPFIELD_METHODS", "POSTS",
    "Hopfield", "HopfieldPooling", "HopfieldLayer", "HopfieldAssociation",
    "ContinuousMemory", "continuous_hopfield_retrieve", "BASES",
]
