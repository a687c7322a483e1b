"""Models with pluggable kernel attention: Memory Mosaics and a GPT baseline."""

from __future__ import annotations

from .gpt import GPT, GPTConfig
from .memory_mosaics import MemoryMosaics, MemoryMosaicsConfig

__all__ = ["MemoryMosaics", "MemoryMosaicsConfig", "GPT", "GPTConfig", "build_model", "ARCHITECTURES"]

ARCHITECTURES = {"memory_mosaics": (MemoryMosaics, MemoryMosaicsConfig), "gpt": (GPT, GPTConfig)}


def build_model(arch: str, **fields):
    """Build a model by architecture name (``memory_mosaics`` or ``gpt``) from config fields."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    cls, cfg_cls = ARCHITECTURES[arch]
    return cls(cfg_cls(**fields))
