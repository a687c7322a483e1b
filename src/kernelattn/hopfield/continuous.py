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
:meth:`ContinuousMemory.retrieve` uses for them. Otherwise the integrals use composite
Gauss–Legendre quadrature with the same number of nodes in each of the N bins: exact
for rectangular bases whatever the node count (their jumps fall on bin edges, where a
plain midpoint rule on a grid that does not split the bins evenly is off by O(N/K)),
and exponentially convergent for the smooth Gaussian bases. With nodes ``t_j`` and
weights ``w_j`` (``Σ w_j = 1``) the update is softmax attention with log-weights,
``q ← Σ_j softmax_j(β x̄(t_j)ᵀq + log w_j) x̄(t_j)``.

The update is the concave–convex step of the energy (:meth:`ContinuousMemory.energy`)

    E(q) = −(1/β) log ∫₀¹ exp(β x̄(t)ᵀq) dt + ½||q||² + ½M²,   M = max_t ||x̄(t)||,

so it never increases it and ``E >= 0``. For rectangular bases it equals
:func:`hopfield_energy` of the pooled rows ``B`` with softmax.

The default ridge ``λ = 0.5`` is the value of the continuous Hopfield papers' code.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_choice, check_int, check_number, check_tensor

__all__ = ["ContinuousMemory", "continuous_hopfield_retrieve", "BASES"]

BASES = ("rectangular", "gaussian")


class ContinuousMemory:
    """Ridge-regressed continuous memory of a sequence of patterns.

    Args:
        memories: ``(L, d)`` (or ``(..., L, d)``) patterns in time order.
        n_basis: number of basis functions ``N`` (>= 1).
        basis: ``"rectangular"`` or ``"gaussian"``.
        ridge: ``λ >= 0`` of the ridge regression. ``0`` is plain least squares; where
            that is not unique (more bases than patterns, a bin with no sample) it is the
            minimum-norm solution, the limit of ``λ → 0⁺``, computed with the
            pseudo-inverse (a basis with no data gets coefficient 0).
        width: σ of the Gaussian bases (default ``1/N``).
        times: ``(L,)`` sample times in ``[0, 1]`` (default midpoints ``(ℓ + ½)/L``).
    """

    def __init__(self, memories: Tensor, n_basis: int, basis: str = "rectangular", ridge: float = 0.5,
                 width: float | None = None, times: Tensor | None = None):
        check_tensor(memories, "memories", nonempty=(-1,))
        if memories.dim() < 2 or memories.shape[-2] == 0:
            raise ValueError(f"memories must be (..., L, d) with L >= 1 patterns, got shape {tuple(memories.shape)}")
        n_basis = check_int(n_basis, "n_basis", minimum=1)
        check_choice(basis, "basis", BASES)
        ridge = check_number(ridge, "ridge", nonnegative=True, hint=" (0 = least squares)")
        if width is not None:
            width = check_number(width, "width", positive=True, hint=" (σ of the Gaussian bases)")
        L = memories.shape[-2]
        if times is None:
            times = (torch.arange(L, dtype=memories.dtype, device=memories.device) + 0.5) / L
        times = torch.as_tensor(times, dtype=memories.dtype, device=memories.device)
        if times.shape != (L,) or not bool(((times >= 0) & (times <= 1)).all()):  # also rejects NaN
            raise ValueError(f"times must be ({L},) values in [0, 1], one per pattern; got shape "
                             f"{tuple(times.shape)}")
        self.n_basis, self.basis, self.ridge = n_basis, basis, float(ridge)
        self.width = float(width) if width is not None else 1.0 / n_basis
        self.times = times
        design = self.psi(times)  # (L, N)
        if self.ridge == 0:
            # FᵀF is singular whenever a basis has no sample (N > L, or an empty bin): solve()
            # would fail or, for Gaussian bases that are merely ill-conditioned, return huge
            # coefficients. The pseudo-inverse gives the λ → 0⁺ limit of the ridge solution.
            self.coefficients = torch.linalg.pinv(design) @ memories  # (..., N, d)
        else:
            gram = design.transpose(0, 1) @ design + self.ridge * torch.eye(n_basis, dtype=design.dtype,
                                                                              device=design.device)
            # B = (FᵀF + λI)⁻¹ Fᵀ X, shared over leading dims of X.
            self.coefficients = torch.linalg.solve(gram, design.transpose(0, 1) @ memories)  # (..., N, d)

    def _check_queries(self, queries: Tensor, beta) -> None:
        c = self.coefficients
        check_tensor(queries, "queries", like=c, like_name="the memories")
        if queries.dim() < 1 or queries.shape[-1] != c.shape[-1]:
            raise ValueError(f"queries must be (..., Q, {c.shape[-1]}) like the stored patterns, got shape "
                             f"{tuple(queries.shape)}")
        check_number(beta, "beta", positive=True, hint=" (the inverse temperature)")

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

    def nodes(self, n_points: int) -> tuple[Tensor, Tensor]:
        """Composite Gauss–Legendre nodes and weights on [0, 1]: ``ceil(n_points / N)`` per bin.

        Returns ``(t (K,), w (K,))`` with ``Σ w = 1``.
        """
        n_points = check_int(n_points, "n_points", minimum=1)
        dt, dev = self.coefficients.dtype, self.coefficients.device
        m = -(-n_points // self.n_basis)
        # Golub–Welsch: Legendre nodes are the eigenvalues of the Jacobi matrix on [-1, 1].
        k = torch.arange(1, m, dtype=torch.float64)
        off = k / torch.sqrt(4 * k * k - 1)
        jac = torch.diag(off, 1) + torch.diag(off, -1)
        x, vec = torch.linalg.eigh(jac)
        w = vec[0] ** 2  # weights on [-1, 1] sum to 2; here to 1 per bin
        left = torch.arange(self.n_basis, dtype=torch.float64) / self.n_basis
        t = (left[:, None] + (x[None, :] + 1) / (2 * self.n_basis)).reshape(-1)
        weights = (w[None, :] / self.n_basis).expand(self.n_basis, m).reshape(-1)
        return t.to(dt).to(dev), weights.to(dt).to(dev)

    def _keys(self, n_points: int | None, method: str) -> tuple[Tensor, Tensor]:
        """``(keys (..., K, d), log_weights (K,))`` of the integral rule."""
        check_choice(method, "method", ("auto", "exact", "quadrature"))
        if method == "exact" and self.basis != "rectangular":
            raise ValueError("method='exact' needs rectangular bases (Gaussian ones need quadrature)")
        if method == "auto":
            method = "exact" if self.basis == "rectangular" else "quadrature"
        if method == "exact":
            # Equal-width bins: ∫ f(x̄(t)) dt = (1/N) Σ_n f(b_n).
            keys = self.coefficients
            logw = torch.full((self.n_basis,), -math.log(self.n_basis), dtype=keys.dtype, device=keys.device)
            return keys, logw
        t, w = self.nodes(n_points or max(500, 10 * self.n_basis))
        return self.signal(t), w.log()

    def retrieve(self, queries: Tensor, beta: float = 1.0, n_iter: int = 1, tol: float = 1e-6,
                 n_points: int | None = None, method: str = "auto") -> Tensor:
        """Iterate ``q ← ∫ p(t) x̄(t) dt``, ``p(t) ∝ exp(β x̄(t)ᵀq)``.

        Args:
            queries: ``(Q, d)`` (or ``(..., Q, d)``).
            beta: inverse temperature.
            n_iter: number of updates (the papers use few; 1 = one attention step).
            tol: stop early once no state moves more than ``tol · max(1, max|x̄|)``.
            n_points: quadrature nodes (default ``max(500, 10·N)``, rounded up to a
                multiple of N).
            method: ``"auto"`` (closed form for rectangular bases, quadrature otherwise),
                ``"exact"`` (rectangular only) or ``"quadrature"``.

        Returns:
            ``(..., Q, d)`` retrieved states.
        """
        n_iter = check_int(n_iter, "n_iter", minimum=1)
        check_number(tol, "tol", nonnegative=True)
        self._check_queries(queries, beta)
        keys, logw = self._keys(n_points, method)
        scale = max(1.0, float(keys.detach().abs().amax()))
        q = queries
        for _ in range(n_iter):
            p = torch.softmax(beta * (q @ keys.transpose(-1, -2)) + logw, dim=-1)  # (..., Q, K)
            q_new = p @ keys
            moved = float((q_new - q).detach().abs().amax()) if q.numel() else 0.0
            q = q_new
            if moved <= tol * scale:
                break
        return q

    def energy(self, queries: Tensor, beta: float = 1.0, n_points: int | None = None,
               method: str = "auto") -> Tensor:
        """``E(q) = −(1/β) log ∫ exp(β x̄(t)ᵀq) dt + ½||q||² + ½M²`` per query, ``(..., Q)``.

        Integrals and ``M = max ||x̄||`` use the same rule as :meth:`retrieve` (exact for
        rectangular bases), so each of its updates never increases this energy.
        """
        self._check_queries(queries, beta)
        keys, logw = self._keys(n_points, method)
        lse = torch.logsumexp(beta * (queries @ keys.transpose(-1, -2)) + logw, dim=-1)
        big_m = keys.norm(dim=-1).amax(-1, keepdim=True)  # (..., 1)
        return -lse / beta + 0.5 * (queries * queries).sum(-1) + 0.5 * big_m ** 2


def continuous_hopfield_retrieve(memories: Tensor, queries: Tensor, n_basis: int, basis: str = "rectangular",
                                 beta: float = 1.0, n_iter: int = 1, tol: float = 1e-6, ridge: float = 0.5,
                                 width: float | None = None, n_points: int | None = None,
                                 method: str = "auto") -> Tensor:
    """Compress ``memories`` (L, d) into ``n_basis`` functions and retrieve ``queries`` (Q, d).

    Shorthand for ``ContinuousMemory(memories, n_basis, basis, ridge, width).retrieve(...)``.
    """
    mem = ContinuousMemory(memories, n_basis, basis, ridge, width)
    return mem.retrieve(queries, beta, n_iter, tol, n_points, method)

