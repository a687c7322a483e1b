"""Radial kernels ``K(u)``, ``u = ||q - k|| / h``: the kernel view of attention.

Each kernel knows the probability mapping it becomes under each normalisation
(SPEC §1): the n-weight kernel ``(1 - u²)_+^n`` is normalised ReLUⁿ under a fixed
bandwidth and α-entmax with ``α = 1 + 1/n`` under adaptive normalisation; the Gaussian
``exp(-u²/2)`` is softmax under both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Kernel", "GaussianKernel", "NWeightKernel", "gaussian", "epanechnikov", "biweight",
           "triweight", "get_kernel", "KERNELS"]


class Kernel:
    """A radial kernel profile. Subclasses define :meth:`profile` on ``u² >= 0``."""

    name: str = "kernel"
    #: α of the α-entmax this kernel becomes under adaptive normalisation.
    alpha: float = 1.0
    #: whether the kernel has bounded support (|u| <= 1).
    compact: bool = False

    def profile(self, u2: Tensor) -> Tensor:
        """Kernel value as a function of the squared scaled distance ``u²``."""
        raise NotImplementedError

    def __call__(self, u: Tensor) -> Tensor:
        """``K(u)`` for scaled distances ``u`` of any shape."""
        return self.profile(u * u)

    @property
    def method(self) -> str:
        """Name of the adaptive-normalisation mapping (a registry method name)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(frozen=True, repr=False)
class GaussianKernel(Kernel):
    """``K(u) = exp(-u²/2)``; softmax under either normalisation, the n → ∞ limit of n-weight."""

    name = "gaussian"
    alpha = 1.0
    compact = False

    def profile(self, u2: Tensor) -> Tensor:
        return torch.exp(-0.5 * u2)

    @property
    def method(self) -> str:
        return "softmax"


@dataclass(frozen=True, repr=False)
class NWeightKernel(Kernel):
    """The n-weight kernel ``K(u) = (1 - u²)_+^n`` (n = 1 Epanechnikov, 2 biweight, 3 triweight).

    Args:
        n: order, a positive integer.
    """

    n: int = 1

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be a positive integer (kernel order), got {self.n!r}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return {1: "epanechnikov", 2: "biweight", 3: "triweight"}.get(self.n, f"{self.n}-weight")

    @property
    def alpha(self) -> float:  # type: ignore[override]
        return 1.0 + 1.0 / self.n

    compact = True

    def profile(self, u2: Tensor) -> Tensor:
        return torch.relu(1 - u2).pow(self.n)

    @property
    def method(self) -> str:
        return {1: "sparsemax", 2: "entmax15", 3: "entmax43"}.get(self.n, f"entmax:{self.alpha!r}")

    def __repr__(self) -> str:
        return f"NWeightKernel(n={self.n})"


gaussian = GaussianKernel()
epanechnikov = NWeightKernel(1)
biweight = NWeightKernel(2)
triweight = NWeightKernel(3)
KERNELS = {"gaussian": gaussian, "epanechnikov": epanechnikov, "biweight": biweight, "triweight": triweight}


def get_kernel(kernel: str | Kernel) -> Kernel:
    """A kernel from its name (``gaussian``, ``epanechnikov``, ``biweight``, ``triweight``,
    ``nweight:<n>``) or a :class:`Kernel` instance."""
    if isinstance(kernel, Kernel):
        return kernel
    if isinstance(kernel, str):
        key = kernel.strip().lower()
        if key in KERNELS:
            return KERNELS[key]
        if key.startswith("nweight:"):
            try:
                return NWeightKernel(int(key.split(":", 1)[1]))
            except ValueError:
                pass
    raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)} or nweight:<n>")


def support_radius(kernel: Kernel) -> float:
    """Largest ``u`` with ``K(u) > 0`` (``inf`` for the Gaussian)."""
    return 1.0 if kernel.compact else math.inf
