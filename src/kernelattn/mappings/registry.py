"""Mappings by name: the method names that models, experiments and the CLI share.

Canonical names (aliases in parentheses), as the paper compares them:
``softmax`` (``gaussian``), ``sparsemax`` (``epanechnikov``), ``entmax15``
(``biweight``), ``entmax43`` (``triweight``), ``normalized_relu`` (also
``normalized_relu:<n>``), ``relumax``, ``topk_softmax``, ``topk_uniform``, and
``entmax:<alpha>`` for any α >= 1.

``normalized_relu_paper`` is the normalised ReLU of the paper's code: ``relu(s)/Σ``
(Epanechnikov at the fixed bandwidth h = √2 when ``s`` is a cosine) with uniform
weights over the visible keys on a row whose support is empty, where
``normalized_relu`` gives zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor

from .entmax import EntmaxFunction, masked_softmax
from .fixed import normalized_relu, relumax
from .topk import topk_softmax, topk_uniform
from .._validation import check_entmax_alpha, check_int, check_number, check_scores

__all__ = ["Mapping", "resolve_mapping", "METHODS", "ALIASES"]

METHODS = ("softmax", "sparsemax", "entmax15", "entmax43", "normalized_relu", "relumax",
           "topk_softmax", "topk_uniform", "normalized_relu_paper")
ALIASES = {"gaussian": "softmax", "epanechnikov": "sparsemax", "biweight": "entmax15",
           "triweight": "entmax43", "entmax": "entmax15", "relu": "normalized_relu"}
_ALPHA = {"softmax": 1.0, "sparsemax": 2.0, "entmax15": 1.5, "entmax43": 4.0 / 3.0}


@dataclass(frozen=True)
class Mapping:
    """A probability mapping chosen by name, callable as ``mapping(scores, dim=-1)``.

    Attributes:
        name: canonical name (``entmax:1.25`` for a general α).
        kind: ``"entmax"`` (α-entmax, softmax and sparsemax included), ``"normalized_relu"``,
            ``"relumax"``, ``"topk_softmax"`` or ``"topk_uniform"``.
        alpha: α for the entmax kind (1 = softmax).
        n: kernel order for ``normalized_relu``.
        k: number kept for the top-k kinds.
        scale, bias: affine map of :func:`normalized_relu`.
        empty: what a ``normalized_relu`` row with an empty support gets, ``"zeros"``
            or ``"uniform"`` (over the keys the row may see).
        temperature: of :func:`relumax`.
    """

    name: str
    kind: str
    alpha: float | None = None
    n: int = 1
    k: int | None = None
    scale: float = 1.0
    bias: float = 0.0
    temperature: float = 1.0
    empty: str = "zeros"

    @property
    def is_softmax(self) -> bool:
        return self.kind == "entmax" and self.alpha == 1.0

    def __call__(self, x: Tensor, dim: int = -1) -> Tensor:
        if self.kind == "entmax":
            if self.alpha == 1.0:
                return masked_softmax(x, check_scores(x, dim))
            dim = check_scores(x, dim)
            if x.shape[dim] == 0:
                return x * 0  # nothing to normalise over (as torch.softmax)
            return EntmaxFunction.apply(x, self.alpha, dim)
        if self.kind == "normalized_relu":
            return normalized_relu(x, self.n, dim, self.scale, self.bias, self.empty)
        if self.kind == "relumax":
            return relumax(x, dim, self.temperature)
        if self.kind == "topk_softmax":
            return topk_softmax(x, self.k, dim)
        return topk_uniform(x, self.k, dim)

    def with_options(self, **kw) -> "Mapping":
        return replace(self, **kw)


def resolve_mapping(method: str | Mapping, *, topk: int | None = None, **options) -> Mapping:
    """Turn a method name into a :class:`Mapping`.

    Args:
        method: a name from ``METHODS``, an alias, ``entmax:<alpha>``,
            ``normalized_relu:<n>``, or a :class:`Mapping` (returned as is).
        topk: ``k`` for the top-k methods (required for them).
        **options: ``scale``, ``bias`` (normalized_relu), ``temperature`` (relumax).

    Raises:
        ValueError: unknown name, bad α, or a top-k method without ``topk``.
    """
    if isinstance(method, Mapping):
        return method
    if not isinstance(method, str):
        raise ValueError(f"method must be a string, got {type(method).__name__}")
    raw = method.strip().lower()
    name = ALIASES.get(raw, raw)
    if name in _ALPHA:
        return Mapping(name=name, kind="entmax", alpha=_ALPHA[name])
    if name.startswith("entmax:"):
        try:
            a = float(name.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"method {method!r}: expected entmax:<alpha> with a number, e.g. entmax:1.25") from None
        a = check_entmax_alpha(a, None, -1)
        return Mapping(name=f"entmax:{a:g}", kind="entmax", alpha=a)
    if name == "normalized_relu_paper":
        # relu(s)/Σ: slope 1, offset 0 -- on cosines, Epanechnikov at h = √2 (a = 2/h² = 1,
        # b = 1 - 2/h² = 0); the paper's code falls back to uniform weights on an empty row.
        allowed = {k: v for k, v in options.items() if k in ("scale", "bias")}
        return Mapping(name=name, kind="normalized_relu", n=1, empty="uniform", **allowed)
    if name == "normalized_relu" or name.startswith("normalized_relu:"):
        n = 1
        if ":" in name:
            try:
                n = int(name.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"method {method!r}: expected normalized_relu:<n> with an integer n >= 1") from None
            if n < 1:
                raise ValueError(f"method {method!r}: n must be >= 1")
        allowed = {k: v for k, v in options.items() if k in ("scale", "bias")}
        if "scale" in allowed:
            allowed["scale"] = check_number(allowed["scale"], "scale", positive=True,
                                            hint=" (normalized_relu's slope a = 2/h² for bandwidth h)")
        if "bias" in allowed and not isinstance(allowed["bias"], Tensor):
            allowed["bias"] = check_number(allowed["bias"], "bias")
        return Mapping(name="normalized_relu" if n == 1 else f"normalized_relu:{n}", kind="normalized_relu",
                       n=n, **allowed)
    if name == "relumax":
        temperature = check_number(options.get("temperature", 1.0), "temperature", positive=True,
                                   hint=" (relumax's h²; larger keeps more entries)")
        return Mapping(name="relumax", kind="relumax", temperature=temperature)
    if name in ("topk_softmax", "topk_uniform"):
        if topk is None:
            raise ValueError(f"method {method!r} needs topk >= 1 (how many keys each query keeps)")
        k = check_int(topk, "topk", minimum=1, hint=" (how many keys each query keeps)")
        return Mapping(name=name, kind=name, k=k)
    known = ", ".join(METHODS + tuple(ALIASES)) + ", entmax:<alpha>"
    raise ValueError(f"unknown method {method!r}; choose one of: {known}")
