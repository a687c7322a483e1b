"""The validation layer every public entry point shares.

Errors name the offending argument and say how to fix it, because these functions sit
deep inside users' models where a bare index error is hard to trace back. Every check
raises ``ValueError`` (bad value, shape, dtype or device) or ``TypeError`` (an option
of the wrong Python type: ``topk="2"``, ``scale=[1.0]``); nothing is silently coerced
(``topk=2.7`` is an error, not 2).

Policy on non-finite inputs, per kind of input:

* **scores** (inputs of a probability mapping): NaN and ``+inf`` raise; ``-inf`` means
  "masked".
* **attention queries, keys, values**: NaN/inf propagate as NaN confined to the rows they
  touch (checking every element would cost a full pass over the inputs on every call);
  a finite wrong answer is never returned.
* **scalar options** (``scale``, ``alpha``, ``temperature``, …): must be finite and in
  range, checked here.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_scores(x: Tensor, dim: int, name: str = "x") -> int:
    """Validate a score tensor and return ``dim`` made non-negative.

    Raises ``ValueError`` for a non-tensor, a non-floating dtype, a ``dim`` out of range,
    or NaN entries (``-inf`` is allowed and means "masked").
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; cast it with .float()")
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim={dim} is out of range for {name} with {x.dim()} dimensions "
                         f"(valid: {-x.dim()} .. {x.dim() - 1})")
    if x.numel():
        # One reduction finds both: max propagates NaN, and is +inf iff some entry is.
        top = x.detach().amax()
        if torch.isnan(top):
            raise ValueError(f"{name} contains NaN scores; use -inf to mask entries instead")
        if torch.isposinf(top):
            raise ValueError(f"{name} contains +inf scores; scores must be finite or -inf (masked)")
    return dim % x.dim()


def check_alpha(alpha, x: Tensor, dim: int) -> float | Tensor:
    """Validate ``alpha`` (float >= 1, or a tensor broadcastable to ``x`` with size 1 on ``dim``)."""
    if isinstance(alpha, Tensor):
        if not alpha.is_floating_point():
            raise ValueError(f"alpha must be a floating-point tensor, got dtype {alpha.dtype}")
        if torch.isnan(alpha).any() or (alpha < 1).any():
            raise ValueError(f"alpha must be >= 1 everywhere (1 = softmax, 2 = sparsemax); "
                             f"got min {alpha.min().item():.4g}")
        if alpha.dim() > 0:
            if alpha.dim() != x.dim():
                raise ValueError(f"alpha tensor must have as many dimensions as x ({x.dim()}), with size 1 "
                                 f"on dim={dim}; got shape {tuple(alpha.shape)}")
            if alpha.shape[dim] != 1:
                raise ValueError(f"alpha tensor must have size 1 on the reduced dim={dim}; got shape "
                                 f"{tuple(alpha.shape)}")
            try:
                torch.broadcast_shapes(alpha.shape, x.shape)
            except RuntimeError:
                raise ValueError(f"alpha of shape {tuple(alpha.shape)} does not broadcast against x of shape "
                                 f"{tuple(x.shape)}") from None
        return alpha
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a float or a tensor, got {type(alpha).__name__}") from None
    if not a >= 1.0:  # also rejects NaN
        raise ValueError(f"alpha must be >= 1 (1 = softmax, 2 = sparsemax), got {alpha}")
    return a


def check_positive_int(value, name: str, hint: str = "") -> int:
    """Validate an integer argument that must be >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) and not (
        isinstance(value, float) and float(value).is_integer()
    ):
        raise ValueError(f"{name} must be a positive integer, got {value!r}{hint}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}{hint}")
    return value


def compute_dtype(x: Tensor) -> torch.dtype:
    """Half-precision scores are solved in float32; float64 stays float64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None, hint: str = "") -> int:
    """An integer option in ``[minimum, maximum]``; bools and non-integral floats raise.

    An integral float (``4.0``, e.g. from a YAML config) is accepted as its integer.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
            isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point()):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}{hint}")
    if isinstance(value, Tensor):
        value = int(value.item())
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{name} must be an integer, got {value!r} (it is not rounded for you){hint}")
        value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}{hint}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}{hint}")
    return value


def check_number(value, name: str, *, positive: bool = False, nonnegative: bool = False,
                 minimum: float | None = None, maximum: float | None = None, allow_inf: bool = False,
                 hint: str = "") -> float:
    """A real scalar option: finite (unless ``allow_inf``), optionally > 0, >= 0 or in a range.

    One-element tensors are read with ``.item()`` (so their gradient is not kept: use a
    tensor-valued argument where the API documents one).
    """
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}{hint}")
    v = float(value)
    if v != v:
        raise ValueError(f"{name} is NaN; pass a finite number{hint}")
    if not allow_inf and v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {v}{hint}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}{hint}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {v}{hint}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}{hint}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}{hint}")
    return v


def check_probability(value, name: str, hint: str = "") -> float:
    """A probability option such as a dropout rate: a number in ``[0, 1)``."""
    v = check_number(value, name, hint=hint)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {v}{hint}")
    return v


def check_choice(value, name: str, choices) -> str:
    """A string option from a fixed set; the message lists the choices."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_tensor(x, name: str, *, dims: tuple[int, ...] | None = None, floating: bool = True,
                 nonempty: tuple[int, ...] = (), like: Tensor | None = None, like_name: str = "") -> Tensor:
    """A tensor argument: its type, number of dims, floating dtype and non-empty dims.

    ``dims`` lists the allowed numbers of dimensions; ``nonempty`` lists dims (negative
    counts from the end) that must have size >= 1; ``like`` requires the same device
    (and, when ``floating``, the same dtype) as another argument named ``like_name``.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; cast it with .float()")
    if dims is not None and x.dim() not in dims:
        want = " or ".join(str(d) for d in dims)
        raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    for d in nonempty:
        if x.dim() and x.shape[d] == 0:
            raise ValueError(f"{name} has size 0 on dim {d} (shape {tuple(x.shape)}); that dim must be non-empty")
    if like is not None:
        if x.device != like.device:
            raise ValueError(f"{name} is on {x.device} but {like_name} is on {like.device}; move them to one device")
        if floating and like.is_floating_point() and x.dtype != like.dtype:
            raise ValueError(f"{name} has dtype {x.dtype} but {like_name} has {like.dtype}; cast one of them")
    return x


def check_bool_mask(mask, name: str, target_shape, like: Tensor, like_name: str, meaning: str = "True = takes part"
                    ) -> Tensor:
    """A boolean mask that broadcasts to ``target_shape`` and lives on ``like``'s device.

    Only ``torch.bool`` is accepted: a float or integer mask is ambiguous (additive scores?
    0/1 weights? which value blocks?), so the message says how to convert it.
    """
    if not isinstance(mask, Tensor):
        raise ValueError(f"{name} must be a boolean torch.Tensor ({meaning}), got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must have dtype torch.bool ({meaning}), got {mask.dtype}; convert it, e.g. "
                         f"{name}.bool() for 0/1 values")
    if mask.device != like.device:
        raise ValueError(f"{name} is on {mask.device} but {like_name} is on {like.device}; move it with "
                         f"{name}.to({like_name}.device)")
    try:
        ok = torch.broadcast_shapes(mask.shape, tuple(target_shape)) == tuple(target_shape)
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} of shape {tuple(mask.shape)} does not broadcast to {tuple(target_shape)}")
    return mask


def check_token_ids(idx, name: str, vocab_size: int, ignore_index: int | None = None) -> Tensor:
    """Token ids: an integer tensor with every entry in ``[0, vocab_size)`` (or ``ignore_index``).

    An id outside the vocabulary would otherwise be an IndexError deep in ``nn.Embedding``
    on CPU, and a device-side assert that poisons the whole CUDA context on GPU.
    """
    if not isinstance(idx, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of token ids, got {type(idx).__name__}")
    if idx.dtype not in (torch.int64, torch.int32):  # what nn.Embedding takes
        raise ValueError(f"{name} must hold int64 (or int32) token ids, got dtype {idx.dtype}; convert with "
                         f"{name}.long()")
    if idx.numel():
        ids = idx if ignore_index is None else idx[idx != ignore_index]
        if ids.numel():
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= vocab_size:
                bad = lo if lo < 0 else hi
                allowed = f"0 .. {vocab_size - 1}" + (f" or {ignore_index}" if ignore_index is not None else "")
                raise ValueError(f"{name} holds token id {bad}, outside the vocabulary (vocab_size={vocab_size}: ids "
                                 f"{allowed}); check the tokenizer, or build the model with a larger vocab_size")
    return idx

# ---------------------------------------------------------------------------------------
# Mapping and attention options (numerics owner). Appended; the checks above are unchanged.

_ALPHA_INF_HINT = ("; α → ∞ is the argmax (hardmax) limit, which has no gradient: take argmax/one-hot "
                   "yourself, or use a large finite α such as 16")


def check_entmax_alpha(alpha, x: Tensor | None, dim: int, *, strict: bool = False):
    """:func:`check_alpha` plus: finite (α = inf refused, pointing at argmax), and > 1 if ``strict``.

    ``x=None`` checks a float α alone (e.g. parsed from ``"entmax:<α>"``).
    """
    if isinstance(alpha, bool):
        raise TypeError(f"alpha must be a float or a tensor, got {alpha!r}")
    if isinstance(alpha, Tensor):
        if alpha.is_floating_point() and torch.isposinf(alpha.detach()).any():
            raise ValueError("alpha contains inf" + _ALPHA_INF_HINT)
        if x is not None:
            alpha = check_alpha(alpha, x, dim)
        elif not alpha.is_floating_point() or torch.isnan(alpha).any() or (alpha < 1).any():
            raise ValueError(f"alpha must be a floating-point tensor >= 1, got {alpha}")
        if strict and (alpha.detach() <= 1).any():
            raise ValueError("a tensor alpha must be > 1 everywhere (use method='softmax' for α = 1); "
                             f"got min {alpha.detach().min().item():.4g}")
        return alpha
    if not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a float or a tensor, got {type(alpha).__name__} {alpha!r}")
    a = float(alpha)
    if a == float("inf"):
        raise ValueError(f"alpha must be finite, got {alpha}" + _ALPHA_INF_HINT)
    if not a >= 1.0:  # also rejects NaN
        raise ValueError(f"alpha must be >= 1 (1 = softmax, 2 = sparsemax), got {alpha}")
    if strict and a <= 1.0:
        raise ValueError(f"alpha must be > 1 here, got {alpha}")
    return a


def check_bool(value, name: str) -> bool:
    """A flag: ``True``/``False`` only (``is_causal=1`` or ``"yes"`` raise TypeError)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_same_device(x: Tensor, name: str, ref: Tensor, ref_name: str) -> None:
    """``x`` must live on ``ref``'s device (a mask elsewhere is never silently ignored or moved)."""
    if x.device != ref.device:
        raise ValueError(f"{name} is on {x.device} but {ref_name} is on {ref.device}; "
                         f"move it with {name}.to({ref_name}.device)")


def check_finite_tensor(x: Tensor, name: str, hint: str = "") -> Tensor:
    """A tensor option (e.g. a per-key bias) must hold finite values only."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.numel() and not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} contains NaN or inf{hint}")
    return x


# Non-finite policy, attention details (numerics owner): a NaN in a query makes that query's
# output rows NaN; a NaN in a key makes NaN every query row that scores it — including rows
# where the key is hidden by an additive float mask or by ``is_causal`` (the causal triangle
# is added as -inf, and -inf + NaN = NaN); only a boolean ``attn_mask`` removes a key outright.
# The SDPA path checks queries and keys for NaN (two reductions) and sends such calls to the
# blocked path, since PyTorch's fused kernel can turn a NaN row into a finite 0.
