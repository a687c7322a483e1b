"""Free and sequential recall: walking through a memory without repeating (HFYN §6).

Both start from the first stored pattern and recall one pattern per step, read off as the
argmax of the final weights.

* :func:`free_recall` — recall every pattern once, in any order. Either a decaying
  inhibition of what was recalled (``avg ← decay·p + (1 − decay)·avg``, scores
  ``β(Xq − γ·avg)``) followed by plain updates, or :func:`constrained_sparsemax` with
  each pattern's remaining weight ``u ← u − p`` as its bound. Scored by the
  unique-memory ratio (distinct patterns recalled / M).
* :func:`sequential_recall` — recall the patterns in their stored order: a
  :func:`sequential_ksubsets` step retrieves the window ``{current, next}`` (scores
  ``β(Xq − γ·avg)``), ``Xᵀμ − q`` is the next pattern, plain updates clean it up, and
  ``avg ← decay·(μ − ω·p) + (1 − decay)·avg`` keeps the walk moving forward. Scored by
  the Levenshtein coefficient against ``1, 2, …, M − 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_choice, check_int, check_number, check_tensor
from .mappings import HopfieldMapping, resolve_hopfield_mapping
from .structured import constrained_sparsemax, sequential_ksubsets

__all__ = ["free_recall", "sequential_recall", "levenshtein_coefficient"]


def _check(memories: Tensor, beta, n_iter, gamma, decay) -> Tensor:
    check_tensor(memories, "memories", dims=(2,), nonempty=(-1,))
    if memories.shape[0] < 2:
        raise ValueError(f"recall needs at least two stored patterns, got memories of shape {tuple(memories.shape)}")
    check_number(beta, "beta", positive=True, hint=" (the inverse temperature)")
    check_int(n_iter, "n_iter", minimum=1)
    check_number(gamma, "gamma", nonnegative=True, hint=" (the inhibition strength)")
    check_number(decay, "decay", minimum=0.0, maximum=1.0, hint=" (the inhibition's memory, in [0, 1])")
    return memories.to(torch.float64)


def free_recall(memories: Tensor, mapping: str | HopfieldMapping = "sparsemax", beta: float = 0.1,
                n_iter: int = 20, gamma: float = 1e9, decay: float = 1e-3, method: str = "inhibition") -> list[int]:
    """Recall the stored patterns one by one, each at most once if the memory allows.

    Args:
        memories: ``(M, d)`` stored patterns; recall starts from ``memories[0]``.
        mapping: the Hopfield mapping of the updates (``method="inhibition"``).
        beta: inverse temperature of every step.
        n_iter: plain updates after each inhibited / constrained step.
        gamma, decay: strength and memory of the inhibition (HFYN: 1e9 and 1e-3).
        method: ``"inhibition"`` or ``"constrained"`` (constrained sparsemax with each
            pattern's remaining weight as bound; ``mapping`` is then unused).

    Returns:
        The ``M`` recalled pattern indices, in order.
    """
    x = _check(memories, beta, n_iter, gamma, decay)
    check_choice(method, "method", ("inhibition", "constrained"))
    hm = resolve_hopfield_mapping(mapping)
    m = x.shape[0]
    q = x[0]
    avg = x.new_zeros(m)
    upper = x.new_ones(m)
    recalled = []
    for _ in range(m):
        if method == "inhibition":
            p = hm(beta * (x @ q - gamma * avg))
            avg = decay * p + (1 - decay) * avg
            q = x.T @ p
            for _ in range(n_iter):
                p = hm(beta * (x @ q))
                q = x.T @ p
        else:
            for _ in range(n_iter):
                p = constrained_sparsemax(beta * (x @ q), upper)
                q = x.T @ p
            upper = (upper - p).clamp_min(0)
        recalled.append(int(p.argmax()))
    return recalled


def sequential_recall(memories: Tensor, mapping: str | HopfieldMapping = "sparsemax", beta: float = 0.1,
                      n_iter: int = 20, gamma: float = 1e9, decay: float = 1e-3, omega: float = 1.1,
                      k: int = 2, inner_beta: float = 1.0) -> list[int]:
    """Recall the stored patterns in order, starting after ``memories[0]``.

    Args:
        memories: ``(M, d)`` patterns in sequence order.
        mapping: the Hopfield mapping of the clean-up updates.
        beta: inverse temperature of the sequential k-subsets step.
        n_iter: clean-up updates per step, at ``inner_beta`` (HFYN: 1).
        gamma, decay, omega: inhibition strength, memory, and the bonus ``ω > 1`` that
            favours the pattern just recalled as the start of the next window.
        k: window size (2: the pair {current, next}).

    Returns:
        The ``M − 1`` recalled indices (ideally ``1, 2, …, M − 1``).
    """
    x = _check(memories, beta, n_iter, gamma, decay)
    check_number(omega, "omega", hint=" (the bonus of the pattern just recalled)")
    check_number(inner_beta, "inner_beta", positive=True)
    k = check_int(k, "k", minimum=1, maximum=x.shape[0], hint=" (the window size)")
    hm = resolve_hopfield_mapping(mapping)
    m = x.shape[0]
    q = x[0]
    avg = x.new_zeros(m)
    recalled = []
    for _ in range(m - 1):
        window = sequential_ksubsets(beta * (x @ q - gamma * avg), k)
        q = x.T @ window - q
        p = window
        for _ in range(n_iter):
            p = hm(inner_beta * (x @ q))
            q = x.T @ p
        avg = decay * (window - omega * p) + (1 - decay) * avg
        recalled.append(int(p.argmax()))
    return recalled


def levenshtein_coefficient(seq: list[int], target: list[int]) -> float:
    """``1 − edit_distance(seq, target) / len(target)`` (1 = the exact sequence)."""
    if not target:
        raise ValueError("target must be non-empty")
    prev = list(range(len(target) + 1))
    for i, a in enumerate(seq, 1):
        cur = [i] + [0] * len(target)
        for j, b in enumerate(target, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b))
        prev = cur
    return 1.0 - prev[-1] / len(target)
