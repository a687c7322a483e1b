"""Leaky (exponential) running average over time, in memory linear in T."""

from __future__ import annotations

import torch
from torch import Tensor


def leaky_average(x: Tensor, lam: Tensor, chunk: int = 64) -> Tensor:
    """``y_t = Σ_{j<=t} exp(-λ_h (t - j)) x_j`` per head, computed chunk by chunk.

    Inside a chunk of ``C`` steps the sum is a ``(C, C)`` lower-triangular decay matrix
    times the chunk; the state carried across chunks is one vector per head, so memory
    is ``O(T·D + H·C²)`` rather than ``O(T²)``. Differentiable in ``x`` and ``λ``.

    Args:
        x: ``(B, H, T, D)``.
        lam: ``(H,)`` positive decay rates.
        chunk: steps per chunk.

    Returns:
        ``(B, H, T, D)``.
    """
    B, H, T, D = x.shape
    C = max(1, min(chunk, T))
    idx = torch.arange(C, device=x.device, dtype=x.dtype)
    diff = idx[:, None] - idx[None, :]  # (C, C)
    lam = lam.to(x.dtype)[:, None, None]
    decay = torch.where(diff >= 0, torch.exp(-lam * diff.clamp_min(0)), torch.zeros((), dtype=x.dtype,
                                                                                    device=x.device))  # (H, C, C)
    from_carry = torch.exp(-lam[:, :, 0] * (idx + 1))  # (H, C): weight of the state before the chunk
    out = []
    carry = None
    for s in range(0, T, C):
        xc = x[:, :, s:s + C]
        c = xc.shape[2]
        yc = decay[:, :c, :c] @ xc  # (B, H, c, D)
        if carry is not None:
            yc = yc + from_carry[:, :c, None] * carry[:, :, None, :]
        carry = yc[:, :, -1]
        out.append(yc)
    return torch.cat(out, dim=2)
