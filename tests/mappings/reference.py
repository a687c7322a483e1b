"""Plain float64 reference code, written for clarity and independence, not speed."""

import numpy as np


def entmax_ref(x, alpha, iters=200):
    """α-entmax of a 1-D array by plain bisection on τ in float64 (masked = -inf)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    fin = np.isfinite(x)
    if not fin.any():
        return out
    if alpha == 1.0:
        e = np.exp(x[fin] - x[fin].max())
        out[fin] = e / e.sum()
        return out
    z = (alpha - 1) * x[fin]
    lo, hi = z.max() - 1.0, z.max()
    for _ in range(iters):
        mid = (lo + hi) / 2
        s = (np.maximum(z - mid, 0) ** (1 / (alpha - 1))).sum()
        lo, hi = (mid, hi) if s > 1 else (lo, mid)
    p = np.maximum(z - (lo + hi) / 2, 0) ** (1 / (alpha - 1))
    out[fin] = p / p.sum()
    return out


def entmax_tau_ref(x, alpha, iters=200):
    """The threshold τ of :func:`entmax_ref` in original units."""
    x = np.asarray(x, dtype=np.float64)
    z = (alpha - 1) * x[np.isfinite(x)]
    lo, hi = z.max() - 1.0, z.max()
    for _ in range(iters):
        mid = (lo + hi) / 2
        s = (np.maximum(z - mid, 0) ** (1 / (alpha - 1))).sum()
        lo, hi = (mid, hi) if s > 1 else (lo, mid)
    return (lo + hi) / 2


def rows_ref(x2d, alpha):
    return np.stack([entmax_ref(r, alpha) for r in np.asarray(x2d)])
