"""Associative memory as sparse kernel regression: Hopfield–Fenchel–Young networks.

Store patterns ``X``; retrieve from a corrupted query by iterating
``q ← post(Xᵀ mapping(β X q))`` (:func:`hopfield_retrieve`), which never increases
:func:`hopfield_energy`. Sparse mappings (sparsemax, α-entmax, normmax) land exactly on a
stored pattern once its margin is large enough; ``ksubsets:<k>`` retrieves an
association of k patterns, :func:`sequential_ksubsets` one of k patterns adjacent in a
sequence, and :func:`constrained_sparsemax` caps each pattern's weight (free recall).
Layers (:class:`Hopfield`, :class:`HopfieldPooling`, :class:`HopfieldLayer`,
:class:`HopfieldEncoderLayer`, :class:`HopfieldDecoderLayer`) put the same association
in a network with ``hopfield-layers``' arguments; :class:`ContinuousMemory` stores a
long sequence in a few basis functions; :func:`dam_retrieve` runs the dense associative
memory baselines.
"""

from .continuous import BASES, ContinuousMemory, continuous_hopfield_retrieve
from .dam import DAM_KINDS, dam_retrieve
from .energy import hopfield_energy
from .layers import Hopfield, HopfieldAssociation
from .mappings import HOPFIELD_METHODS, HopfieldMapping, ksubsets, normmax, resolve_hopfield_mapping
from .pooling import HopfieldLayer, HopfieldPooling
from .porting import convert_hopfield_layers_state_dict, load_hopfield_layers_state_dict
from .post import POSTS
from .recall import free_recall, levenshtein_coefficient, sequential_recall
from .retrieval import Retrieval, hopfield_retrieve, hopfield_step, pattern_margins
from .structured import constrained_sparsemax, sequential_ksubsets
from .transformer import HopfieldDecoderLayer, HopfieldEncoderLayer

__all__ = [
    "hopfield_retrieve", "hopfield_step", "hopfield_energy", "pattern_margins", "Retrieval",
    "normmax", "ksubsets", "HopfieldMapping", "resolve_hopfield_mapping", "HOPFIELD_METHODS", "POSTS",
    "constrained_sparsemax", "sequential_ksubsets", "free_recall", "sequential_recall", "levenshtein_coefficient",
    "dam_retrieve", "DAM_KINDS",
    "Hopfield", "HopfieldPooling", "HopfieldLayer", "HopfieldAssociation", "HopfieldEncoderLayer",
    "HopfieldDecoderLayer", "load_hopfield_layers_state_dict", "convert_hopfield_layers_state_dict",
    "ContinuousMemory", "continuous_hopfield_retrieve", "BASES",
]
