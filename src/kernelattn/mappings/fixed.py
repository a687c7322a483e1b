"""Fixed normalisation: compact kernels with a given bandwidth, normalised by their sum.

The n-weight kernel ``(1 - u²)_+^n`` with ``u = ||q - k|| / h`` becomes, in terms of the
score ``s = q·k``, ``relu(a·s + b)^n`` with ``a = 2/h²`` and
``b = 1 - (||q||² + ||k||²)/h²`` (``b = 1 - 2/h²`` for unit vectors) — SPEC §1. Unlike
entmax, nothing guarantees a key inside the support: such a row returns **zeros** (and
zero gradient). That is the documented fallback; it is what Nadaraya–Watson with an
empty neighbourhood gives when the estimate is defined as 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import (check_choice, check_finite_tensor, check_int, check_number, check_same_device,
                           check_scores, compute_dtype)

__all__ = ["normalized_relu", "relumax", "kernel_affine", "NormalizedReLU", "ReLUMax"]


def kernel_affine(bandwidth: float, sq_norm: float | Tensor = 2.0) -> tuple[float, float | Tensor]:
    """Map a kernel bandwidth ``h`` to the ``(scale, bias)`` of :func:`normalized_relu`.

    Args:
        bandwidth: ``h > 0``.
        sq_norm: ``||q||² + ||k||²`` (2 for unit vectors); a tensor broadcastable to the
            scores for general vectors.

    Returns:
        ``(2/h², 1 - sq_norm/h²)``.
    """
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    h2 = float(bandwidth) ** 2
    return 2.0 / h2, 1.0 - sq_norm / h2


def _safe_normalize(w: Tensor, dim: int) -> Tensor:
    denom = w.sum(dim=dim, keepdim=True)
    return w / torch.where(denom > 0, denom, torch.ones_like(denom))


EMPTY_ROW = ("zeros", "uniform")


def normalized_relu(x: Tensor, n: int = 1, dim: int = -1, scale: float = 1.0,
                    bias: float | Tensor = 0.0, empty: str = "zeros") -> Tensor:
    """Normalised ReLUⁿ: ``w ∝ relu(scale·x + bias)^n`` (n-weight kernel, fixed bandwidth).

    Use :func:`kernel_affine` to get ``scale``/``bias`` from a bandwidth.

    Args:
        x: scores of any shape; ``-inf`` = masked.
        n: kernel order (1 Epanechnikov, 2 biweight, 3 triweight, ...), integer >= 1.
        dim: dimension to normalise over.
        scale: ``a > 0``.
        bias: ``b``, a float or a tensor broadcastable to ``x`` (e.g. per-key norms).
        empty: what a row with no entry in the support gets: ``"zeros"`` (default), or
            ``"uniform"`` — equal weights on the row's unmasked (not ``-inf``) entries,
            the fallback of the paper's code (``normalized_relu_paper``).

    Returns:
        Tensor of ``x``'s shape and dtype; rows with no entry in the support are zeros
        (or uniform, see ``empty``); fully masked rows are zeros either way.
    """
    dim = check_scores(x, dim)
    n = check_int(n, "n", minimum=1, hint=" (kernel order: 1 = Epanechnikov, 2 = biweight, 3 = triweight)")
    scale = check_number(scale, "scale", positive=True, hint=" (it is 2/h² for bandwidth h)")
    if isinstance(bias, Tensor):
        check_finite_tensor(bias, "bias", "; pass finite per-key offsets b = 1 - (||q||² + ||k||²)/h²")
        check_same_device(bias, "bias", x, "x")
    else:
        bias = check_number(bias, "bias", hint=" (b = 1 - (||q||² + ||k||²)/h²)")
    check_choice(empty, "empty", EMPTY_ROW)  # what a row with no key in the support gets
    if x.shape[dim] == 0:
        return x * 0  # nothing to normalise over (as torch.softmax)
    cdt = compute_dtype(x)
    xc = x.to(cdt)
    if isinstance(bias, Tensor):
        bias = bias.to(cdt)
    # -inf * scale + bias = -inf -> relu gives 0, so masking needs no special case.
    w = torch.relu(xc * scale + bias)
    if n > 1:
        # Divide by the row max before the power (the normalisation cancels it): w**n
        # would underflow to 0 for tiny weights and overflow for huge ones.
        top = w.amax(dim=dim, keepdim=True)
        w = (w / torch.where(top > 0, top, torch.ones_like(top))).pow(n)
    if empty == "uniform":
        # An empty support has a zero sum (a NaN row keeps its NaN sum, so stays NaN);
        # such a row spreads its weight evenly over the entries it may see.
        visible = (~torch.isneginf(xc)).to(cdt)
        w = torch.where(w.sum(dim=dim, keepdim=True) == 0, visible, w)
    return _safe_normalize(w, dim).to(x.dtype)


def relumax(x: Tensor, dim: int = -1, temperature: float = 1.0) -> Tensor:
    """ReLU-max: ``w ∝ relu((x - max x)/temperature + 1)``.

    The row maximum always has weight 1 before normalising, so the support is never
    empty (except on fully masked rows, which return zeros).

    Args:
        x: scores of any shape; ``-inf`` = masked.
        dim: dimension to normalise over.
        temperature: ``h² > 0``; larger keeps more entries.

    Returns:
        Tensor of ``x``'s shape and dtype.
    """
    dim = check_scores(x, dim)
    temperature = check_number(temperature, "temperature", positive=True, hint=" (h²; larger keeps more entries)")
    if x.shape[dim] == 0:
        return x * 0  # nothing to normalise over (as torch.softmax)
    xc = x.to(compute_dtype(x))
    mx = xc.amax(dim=dim, keepdim=True)
    mx = torch.where(torch.isneginf(mx), torch.zeros_like(mx), mx)
    w = torch.relu((xc - mx) / temperature + 1)
    return _safe_normalize(w, dim).to(x.dtype)


class NormalizedReLU(nn.Module):
    """Module form of :func:`normalized_relu`."""

    def __init__(self, n: int = 1, dim: int = -1, scale: float = 1.0, bias: float = 0.0):
        super().__init__()
        self.n, self.dim, self.scale, self.bias = n, dim, scale, bias

    def forward(self, x: Tensor) -> Tensor:
        return normalized_relu(x, self.n, self.dim, self.scale, self.bias)


class ReLUMax(nn.Module):
    """Module form of :func:`relumax`."""

    def __init__(self, dim: int = -1, temperature: float = 1.0):
        super().__init__()
        self.dim, self.temperature = dim, temperature

    def forward(self, x: Tensor) -> Tensor:
        return relumax(x, self.dim, self.temperature)
