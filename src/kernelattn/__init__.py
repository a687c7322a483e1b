"""kernelattn: sparse attention as compact kernel regression.

Layers, bottom-up: ``mappings`` (probability mappings) and ``kernels`` (the kernel
view) → ``attention`` (the operator) → ``modules`` and ``models`` → ``data``,
``tasks`` and ``training`` → ``experiments`` and the ``cli``; ``hopfield`` holds the
associative memories built on the same mappings.
"""

from .attention import (KernelKVCache, kernel_attention, kernel_attention_step, kernel_mapping, last_backend,
                        select_backend)
from .hopfield import (ContinuousMemory, Hopfield, HopfieldLayer, HopfieldMapping, HopfieldPooling,
                       continuous_hopfield_retrieve, hopfield_energy, hopfield_retrieve, hopfield_step, ksubsets,
                       normmax, pattern_margins, resolve_hopfield_mapping)
from .mappings import *  # noqa: F401,F403
from .mappings import __all__ as _mappings_all

__version__ = "0.1.0"
__all__ = list(_mappings_all) + [
    "kernel_attention", "kernel_attention_step", "kernel_mapping", "last_backend", "select_backend", "KernelKVCache",
    "hopfield_retrieve", "hopfield_step", "hopfield_energy", "pattern_margins", "normmax", "ksubsets",
    "resolve_hopfield_mapping", "HopfieldMapping", "Hopfield", "HopfieldPooling", "HopfieldLayer",
    "ContinuousMemory", "continuous_hopfield_retrieve",
]
