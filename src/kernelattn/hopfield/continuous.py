"""Continuous-time memory: L stored vectors compressed into N basis functions over [0, 1].

The L patterns are read as samples ``x_ℓ = x(t_ℓ)`` of a signal on ``[0, 1]``
(``t_ℓ = (ℓ + ½)/L`` by default) and replaced by ``x̄(t) = Bᵀψ(t)``, where ``ψ`` stacks
N basis functions and ``B`` (N, d) is the ridge regression
``B = (FᵀF + λI)⁻¹ Fᵀ X`` with ``F_{ℓn} = ψ_n(t_ℓ)``. Retrieval replaces the sum over
stored patterns by an integral over time under the Gibbs density
``p(t) ∝ exp(β x̄(t)ᵀq)``:

    q ← ∫₀¹ p(t) x̄(t) dt.

Bases: ``rectangular`` (``ψ_n = 1`` on ``[n/N, (n+1)/N)``) and ``gaussian``
(``ψ_n(t) = exp(−(t − μ_n)²/(2σ²))``, ``μ_n = (n + ½)/N``, ``σ = 1/N`` by default).

With rectangular bases ``x̄`` is constant on each of the N equal-width bins, so the
integral is exactly a softmax over the N rows of ``B`` — the ridge-pooled bins
``b_n = Σ_{t_ℓ ∈ bin n} x_ℓ / (count_n + λ)``. That closed form is what
:meth:`ContinuousMemory.retrieve` uses for them; Gaussian bases use the midpoint rule
on ``n_points`` nodes (which is softmax attention over ``x̄`` at the nodes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .retrieval import hopfield_retrieve

__all__ = ["ContinuousMemory", "continuous_hopfield_retrieve", "BASES"]

BASES = ("rectangular", "gaussian")


class ContinuousMemory:
    """Ridge-regressed continuous memory of a sequence of patterns.

    Args:
        memories: ``(L, d)`` (or ``(..., L, d)``) patterns in time order.
        n_basis: number of basis functions ``N`` (>= 1).
        basis: ``"rectangular"`` or ``"gaussian"``.
        ridge: ``λ >= 0`` of the ridge regression.
        width: σ of the Gaussian bases (default ``1/N``).
        times: ``(L,)`` sample times in ``[0, 1]`` (default midpoints ``(ℓ + ½)/L``).
    """

    def __init__(self, memories: Tensor, n_basis: int, basis: str = "rectangular", ridge: float = 1e-3,
                 width: float | None = None, times: Tensor | None = None):
        if not isinstance(memories, Tensor) or memories.dim() < 2 or not memories.is_floating_point():
            raise ValueError(f"memories must be a floating-point tensor (..., L, d), got "
                             f"{getattr(memories, 'shape', type(memories).__name__)}")
        if isinstance(n_basis, bool) or not isinstance(n_basis, int) or n_basis < 1:
            raise ValueError(f"n_basis must be a positive integer, got {n_basis!r}")
        if basis not in BASES:
            raise ValueError(f"unknown basis {basis!r}; choose one of: {', '.join(BASES)}")
        if not ridge >= 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        if width is not None and not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        L = memories.shape[-2]
        if times is None:
            times = (torch.arange(L, dtype=memories.dtype, device=memories.device) + 0.5) / L
        times = torch.as_tensor(times, dtype=memories.dtype, device=memories.device)
        if times.shape != (L,) or (times < 0).any() or (times > 1).any():
            raise ValueError(f"times must be ({L},) values in [0, 1]")
        self.n_basis, self.basis, self.ridge = n_basis, basis, float(ridge)
        self.width = float(width) if width is not None else 1.0 / n_basis
        self.times = times
        design = self.psi(times)  # (L, N)
        gram = design.transpose(0, 1) @ design + self.ridge * torch.eye(n_basis, dtype=design.dtype,
                                                                          device=design.device)
        # B = (FᵀF + λI)⁻¹ Fᵀ X, shared over leading dims of X.
        self.coefficients = torch.linalg.solve(gram, design.transpose(0, 1) @ memories)  # (..., N, d)

    def psi(self, t: Tensor) -> Tensor:
        """Basis functions at times ``t`` (T,) → ``(T, N)``."""
        n = self.n_basis
        if self.basis == "rectangular":
            idx = (t * n).floor().clamp(0, n - 1).long()
            return torch.nn.functional.one_hot(idx, n).to(t.dtype)
        mu = (torch.arange(n, dtype=t.dtype, device=t.device) + 0.5) / n
        return torch.exp(-0.5 * ((t[:, None] - mu[None, :]) / self.width) ** 2)

    def signal(self, t: Tensor) -> Tensor:
        """The continuous memory ``x̄(t) = Bᵀψ(t)`` at times ``t`` (T,) → ``(..., T, d)``."""
        return self.psi(t) @ self.coefficients

    def nodes(self, n_points: int) -> Tensor:
        """Midpoint-rule nodes ``(k + ½)/K`` on ``[0, 1]``."""
        return (torch.arange(n_points, dtype=self.coefficients.dtype, device=self.coefficients.device) + 0.5) / n_points

    def retrieve(self, queries: Tensor, beta: float = 1.0, n_iter: int = 1, tol: float = 1e-6,
                 n_points: int | None = None, method: str = "auto") -> Tensor:
        """Iterate ``q ← ∫ p(t) x̄(t) dt``, ``p(t) ∝ exp(β x̄(t)ᵀq)``.

        Args:
            queries: ``(Q, d)`` (or ``(..., Q, d)``).
            beta: inverse temperature.
            n_iter: number of updates (the papers use few; 1 = one attention step).
            tol: stop early once states move less than this.
            n_points: quadrature nodes (default ``max(500, 10·N)``).
            method: ``"auto"`` (closed form for rectangular bases, quadrature otherwise),
                ``"exact"`` (rectangular only) or ``"quadrature"``.

        Returns:
            ``(..., Q, d)`` retrieved states.
        """
        if method not in ("auto", "exact", "quadrature"):
            raise ValueError(f"method must be 'auto', 'exact' or 'quadrature', got {method!r}")
        if method == "exact" and self.basis != "rectangular":
            raise ValueError("method='exact' needs rectangular bases (Gaussian ones need quadrature)")
        if method == "auto":
            method = "exact" if self.basis == "rectangular" else "quadrature"
        if method == "exact":
            # Equal-width bins: ∫ p(t) x̄(t) dt = softmax over the N pooled rows.
            keys = self.coefficients
        else:
            n_points = n_points or max(500, 10 * self.n_basis)
            keys = self.signal(self.nodes(n_points))  # midpoint rule: equal weights cancel
        return hopfield_retrieve(keys, queries, "softmax", beta=beta, n_iter=n_iter, tol=tol)


def continuous_hopfield_retrieve(memories: Tensor, queries: Tensor, n_basis: int, basis: str = "rectangular",
                                 beta: float = 1.0, n_iter: int = 1, tol: float = 1e-6, ridge: float = 1e-3,
                                 width: float | None = None, n_points: int | None = None,
                                 method: str = "auto") -> Tensor:
    """Compress ``memories`` (L, d) into ``n_basis`` functions and retrieve ``queries`` (Q, d).

    Shorthand for ``ContinuousMemory(memories, n_basis, basis, ridge, width).retrieve(...)``.
    """
    mem = ContinuousMemory(memories, n_basis, basis, ridge, width)
    return mem.retrieve(queries, beta, n_iter, tol, n_points, method)

