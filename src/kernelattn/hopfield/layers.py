"""The Hopfield association layer, with any Hopfield–Fenchel–Young mapping.

Arguments, defaults and meanings follow the ``hopfield-layers`` library (Ramsauer et al.,
``hflayers.Hopfield``) so a model ports by changing the import; the porting guide
``docs/porting_from_hopfield_layers.md`` lists every argument. What this layer adds, all
keyword-only after hopfield-layers' own arguments: ``mapping`` (any name of
:func:`resolve_hopfield_mapping`, softmax by default), ``alpha_learnable`` /
``alpha_bounds`` (a learned α per head, as in HFYN), ``post`` (the HFY
post-transform inside the layer) and ``projection_init_std`` (hopfield-layers' init).

Per head ``h`` the association is ``ξ = mapping(β_h · Q_h K_hᵀ + mask)``; extra update
steps replace the state by ``post(ξ K_h)`` and recompute ``ξ``; the output is
``out_proj(concat_h post(dropout(ξ) V_h))``.

* :class:`HopfieldAssociation` — the mapping over the last dim, with the learnable α.
* :class:`Hopfield` — associate state patterns (queries) with stored patterns (keys) and
  retrieve pattern projections (values).

The pooling and lookup layers live in :mod:`.pooling`, the encoder and decoder layers in
:mod:`.transformer`.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mappings import HopfieldMapping, resolve_hopfield_mapping
from .post import resolve_post

__all__ = ["Hopfield", "HopfieldAssociation"]

# update_steps_max=None iterates until update_steps_eps is met; this cap only stops a
# state that oscillates forever (hopfield-layers would hang).
UNBOUNDED_STEPS_CAP = 10_000


class HopfieldAssociation(nn.Module):
    """A Hopfield mapping over the last dim, with an optional learnable α per head.

    Args:
        mapping: a Hopfield mapping name or object.
        num_heads: heads, for a per-head α on scores ``(B, H, L, S)``.
        alpha_learnable: learn α (entmax and normmax kinds only), initialised at the
            mapping's α.
        alpha_bounds: ``None`` (default) parametrises ``α = 1 + softplus(θ)``: any α > 1,
            smooth gradients everywhere. ``(lo, hi)`` stores α itself and clamps it to
            ``[lo, hi]`` in the forward pass, as HFYN does with ``(1.01, 2.0)``; the
            gradient is zero while α sits outside the interval.
    """

    def __init__(self, mapping: str | HopfieldMapping = "softmax", num_heads: int = 1,
                 alpha_learnable: bool = False, alpha_bounds: tuple[float, float] | None = None):
        super().__init__()
        self.mapping = resolve_hopfield_mapping(mapping)
        self.alpha_learnable = alpha_learnable
        self.alpha_bounds = None
        if alpha_bounds is not None and not alpha_learnable:
            raise ValueError("alpha_bounds only applies with alpha_learnable=True")
        if alpha_learnable:
            a = self.mapping.alpha
            if self.mapping.kind == "ksubsets" or a is None or a <= 1.0:
                raise ValueError(f"alpha_learnable needs an entmax:<alpha> or normmax:<alpha> mapping with "
                                 f"alpha > 1 (got {self.mapping.name!r}); e.g. mapping='entmax:1.5'")
            if alpha_bounds is not None:
                lo, hi = (float(b) for b in alpha_bounds)
                if not 1.0 < lo <= hi:
                    raise ValueError(f"alpha_bounds must be (lo, hi) with 1 < lo <= hi, got {alpha_bounds!r}; "
                                     "HFYN uses (1.01, 2.0)")
                self.alpha_bounds = (lo, hi)
                self.alpha_raw = nn.Parameter(torch.full((1, num_heads, 1, 1), min(max(a, lo), hi)))
            else:
                am1 = torch.full((1, num_heads, 1, 1), a - 1.0)
                self.alpha_raw = nn.Parameter(am1 + torch.log(-torch.expm1(-am1)))  # inverse softplus

    @property
    def alpha(self) -> Tensor | float | None:
        """Current α: a ``(1, H, 1, 1)`` tensor when learnable, else the mapping's float."""
        if not self.alpha_learnable:
            return self.mapping.alpha
        if self.alpha_bounds is not None:
            return self.alpha_raw.clamp(*self.alpha_bounds)
        return 1 + F.softplus(self.alpha_raw)

    def forward(self, scores: Tensor) -> Tensor:
        """``scores (B, H, L, S)`` (any shape without learnable α) → weights of the same shape."""
        if self.alpha_learnable:
            if scores.dim() != 4:
                raise ValueError(f"learnable alpha expects scores (B, H, L, S), got {tuple(scores.shape)}")
            return self.mapping(scores, -1, self.alpha.to(scores.dtype))
        return self.mapping(scores, -1)

    def extra_repr(self) -> str:
        return f"mapping={self.mapping.name}, alpha_learnable={self.alpha_learnable}, alpha_bounds={self.alpha_bounds}"


def _layer_norm(size: int | None, on: bool, affine: bool, eps: float, what: str) -> nn.Module | None:
    if not on:  # the affine flag then has nothing to act on (hopfield-layers asserts instead)
        return None
    if size is None:
        raise ValueError(f"normalize_{what}=True needs the input size: pass input_size (or the "
                         f"{what}'s own *_size), or set normalize_{what}=False")
    return nn.LayerNorm(size, elementwise_affine=affine, eps=eps)


def _per_head(value, num_heads: int, name: str, dtype=None) -> Tensor | None:
    """A float/int or a ``(num_heads,)`` tensor as a ``(num_heads,)`` tensor (None stays None)."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        if value.dim() == 0:
            value = value.reshape(1).expand(num_heads)
        if value.shape != (num_heads,):
            raise ValueError(f"{name} tensor must have one entry per head, shape ({num_heads},), got "
                             f"{tuple(value.shape)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number or a ({num_heads},) tensor, got {type(value).__name__}")
    return torch.full((num_heads,), value, dtype=dtype or torch.get_default_dtype())


class Hopfield(nn.Module):
    """Hopfield association layer with ``hopfield-layers``' arguments.

    Args (hopfield-layers' names, order and defaults):
        input_size: size of the state patterns (queries), and of stored patterns and
            pattern projections unless ``stored_pattern_size`` / ``pattern_projection_size``.
            May be ``None`` only in static-only mode (see below).
        hidden_size: per-head size of the association space (default ``input_size // num_heads``).
        output_size: size of the output (default ``input_size``).
        pattern_size: per-head size of the retrieved pattern projections (default ``hidden_size``).
        num_heads: parallel associations.
        scaling: β: a float, or a ``(num_heads,)`` tensor with one β per head (pass an
            ``nn.Parameter`` to learn it). Default ``1/sqrt(hidden_size)``, or 1.0 in
            static-only mode (hopfield-layers' rule).
        update_steps_max: extra updates of the state in the association space,
            ``ξ ← mapping(β post(ξ K) Kᵀ)``, before the retrieval: an int (0 = one-step
            attention), ``None`` (until ``update_steps_eps`` is met) or a ``(num_heads,)``
            int tensor.
        update_steps_eps: a head stops updating once ``max_batch ||ξ_new − ξ_old||_F <=
            update_steps_eps`` (float or ``(num_heads,)`` tensor; 0 = never stop early).
        normalize_stored_pattern, normalize_state_pattern, normalize_pattern_projection:
            LayerNorm the raw inputs first (``*_affine``: with parameters; ``*_eps``: its eps).
        normalize_hopfield_space (+ ``_affine``, ``_eps``): LayerNorm the projected states
            and stored patterns over each head's ``hidden_size`` (one shared affine).
        stored_pattern_as_static, state_pattern_as_static, pattern_projection_as_static:
            use the (normalised) input as it is instead of a linear projection. Its size is
            either ``hidden_size`` (``pattern_size`` for projections) — repeated over the
            heads, as hopfield-layers does — or ``num_heads * hidden_size``, split into heads.
            All three static, no Hopfield-space normalisation and
            ``disable_out_projection=True`` is *static-only* mode: no parameters, sizes read
            from the inputs.
        pattern_projection_as_connected: project pattern projections with the stored
            patterns' projection first (then with their own, unless static); needs
            ``pattern_size == hidden_size`` and a non-static stored pattern.
        stored_pattern_size, pattern_projection_size: input sizes when they differ from
            ``input_size``.
        batch_first: inputs are ``(B, L, E)``; else ``(L, B, E)``.
        association_activation: name of a ``torch`` function (``"tanh"``, ``"relu"``…)
            applied to the output.
        dropout: dropout on the association weights.
        input_bias: bias in the input and output projections.
        concat_bias_pattern: append one learned stored pattern and pattern projection
            (``nn.MultiheadAttention``'s ``add_bias_kv``). hopfield-layers creates these
            parameters but never uses them; see the porting guide.
        add_zero_association: append an all-zero stored pattern and projection (a state
            may then retrieve nothing).
        disable_out_projection: return the concatenated heads ``(…, num_heads * pattern_size)``.

    Keyword-only (this library):
        mapping: ``softmax``, ``sparsemax``, ``entmax15``, ``entmax:<a>``, ``normmax:<a>``,
            ``ksubsets:<k>`` — the Hopfield–Fenchel–Young mapping.
        alpha_learnable, alpha_bounds: learn α per head (see :class:`HopfieldAssociation`).
        post: HFY post-transform ``identity`` (default), ``l2`` or ``layernorm``: applied
            per head to projected states, stored patterns and projections, to each updated
            state and to each head's retrieval (the HFYN layers' ``ypsi``).
        projection_init_std: ``None`` (default) keeps ``nn.Linear``'s initialisation of the
            projections; a float draws their weights from ``normal(0, projection_init_std)`` with
            zero biases — ``0.02`` is hopfield-layers' initialisation.
    """

    def __init__(self, input_size: int | None = None, hidden_size: int | None = None,
                 output_size: int | None = None, pattern_size: int | None = None, num_heads: int = 1,
                 scaling: float | Tensor | None = None, update_steps_max: int | Tensor | None = 0,
                 update_steps_eps: float | Tensor = 1e-4,
                 normalize_stored_pattern: bool = True, normalize_stored_pattern_affine: bool = True,
                 normalize_stored_pattern_eps: float = 1e-5,
                 normalize_state_pattern: bool = True, normalize_state_pattern_affine: bool = True,
                 normalize_state_pattern_eps: float = 1e-5,
                 normalize_pattern_projection: bool = True, normalize_pattern_projection_affine: bool = True,
                 normalize_pattern_projection_eps: float = 1e-5,
                 normalize_hopfield_space: bool = False, normalize_hopfield_space_affine: bool = False,
                 normalize_hopfield_space_eps: float = 1e-5,
                 stored_pattern_as_static: bool = False, state_pattern_as_static: bool = False,
                 pattern_projection_as_static: bool = False, pattern_projection_as_connected: bool = False,
                 stored_pattern_size: int | None = None, pattern_projection_size: int | None = None,
                 batch_first: bool = True, association_activation: str | None = None, dropout: float = 0.0,
                 input_bias: bool = True, concat_bias_pattern: bool = False, add_zero_association: bool = False,
                 disable_out_projection: bool = False, *,
                 mapping: str | HopfieldMapping = "softmax", alpha_learnable: bool = False,
                 alpha_bounds: tuple[float, float] | None = None, post: str = "identity",
                 projection_init_std: float | None = None):
        super().__init__()
        if not isinstance(batch_first, bool):
            raise ValueError(f"batch_first must be a bool, got {type(batch_first).__name__}")
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be an integer >= 1, got {num_heads!r}")
        for name, size in (("input_size", input_size), ("hidden_size", hidden_size), ("output_size", output_size),
                           ("pattern_size", pattern_size), ("stored_pattern_size", stored_pattern_size),
                           ("pattern_projection_size", pattern_projection_size)):
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {size!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.static_execution = (stored_pattern_as_static and state_pattern_as_static and pattern_projection_as_static
                                 and not pattern_projection_as_connected and not normalize_hopfield_space
                                 and disable_out_projection)
        if input_size is None and not self.static_execution:
            raise ValueError("input_size is required unless every pattern is static (stored_pattern_as_static, "
                             "state_pattern_as_static and pattern_projection_as_static all True, "
                             "normalize_hopfield_space=False, disable_out_projection=True)")
        if pattern_projection_as_connected and stored_pattern_as_static:
            raise ValueError("pattern_projection_as_connected reuses the stored-pattern projection, so it needs "
                             "stored_pattern_as_static=False")
        if hidden_size is None and input_size is not None:
            if not self.static_execution and input_size % num_heads:
                raise ValueError(f"input_size ({input_size}) must be divisible by num_heads ({num_heads}), "
                                 f"or pass hidden_size")
            hidden_size = max(1, input_size // num_heads)
        if pattern_size is None:
            pattern_size = hidden_size
        if pattern_projection_as_connected and pattern_size != hidden_size:
            raise ValueError(f"pattern_projection_as_connected needs pattern_size == hidden_size, got "
                             f"{pattern_size} and {hidden_size}")
        stored_pattern_size = stored_pattern_size or input_size
        pattern_projection_size = pattern_projection_size or input_size
        if pattern_projection_as_connected and stored_pattern_size != pattern_projection_size:
            raise ValueError(f"pattern_projection_as_connected needs stored_pattern_size == pattern_projection_size, "
                             f"got {stored_pattern_size} and {pattern_projection_size}")
        self.num_heads, self.hidden_size, self.pattern_size = num_heads, hidden_size, pattern_size
        self.input_size, self.stored_pattern_size = input_size, stored_pattern_size
        self.pattern_projection_size = pattern_projection_size
        self.stored_pattern_as_static = stored_pattern_as_static
        self.state_pattern_as_static = state_pattern_as_static
        self.pattern_projection_as_static = pattern_projection_as_static
        self.pattern_projection_as_connected = pattern_projection_as_connected
        self.batch_first = batch_first
        self.add_zero_association = add_zero_association

        if scaling is None:
            scaling = 1.0 if self.static_execution else 1.0 / math.sqrt(hidden_size)
        if isinstance(scaling, Tensor):
            _per_head(scaling, num_heads, "scaling")  # validates the shape
            if isinstance(scaling, nn.Parameter):
                self.scaling = scaling
            else:
                # A setting, not a weight (hopfield-layers keeps it out of the state dict too).
                self.register_buffer("scaling", scaling.detach().clone(), persistent=False)
        else:
            if isinstance(scaling, bool) or not isinstance(scaling, (int, float)):
                raise ValueError(f"scaling must be a float or a ({num_heads},) tensor, got {type(scaling).__name__}")
            self.scaling = float(scaling)
        if update_steps_max is not None and not isinstance(update_steps_max, Tensor):
            if isinstance(update_steps_max, bool) or not isinstance(update_steps_max, int) or update_steps_max < 0:
                raise ValueError(f"update_steps_max must be an int >= 0, None (until update_steps_eps) or a "
                                 f"({num_heads},) tensor, got {update_steps_max!r}")
        if isinstance(update_steps_max, Tensor):
            _per_head(update_steps_max, num_heads, "update_steps_max")
        eps = _per_head(update_steps_eps, num_heads, "update_steps_eps")
        if (eps < 0).any():
            raise ValueError(f"update_steps_eps must be >= 0, got {update_steps_eps}")
        self.update_steps_max, self.update_steps_eps = update_steps_max, update_steps_eps

        self.norm_stored_pattern = _layer_norm(stored_pattern_size, normalize_stored_pattern,
                                               normalize_stored_pattern_affine, normalize_stored_pattern_eps,
                                               "stored_pattern")
        self.norm_state_pattern = _layer_norm(input_size, normalize_state_pattern, normalize_state_pattern_affine,
                                              normalize_state_pattern_eps, "state_pattern")
        self.norm_pattern_projection = _layer_norm(pattern_projection_size, normalize_pattern_projection,
                                                   normalize_pattern_projection_affine,
                                                   normalize_pattern_projection_eps, "pattern_projection")
        hd = num_heads * hidden_size if hidden_size is not None else None
        pd = num_heads * pattern_size if pattern_size is not None else None
        self.q_proj = None if state_pattern_as_static else nn.Linear(input_size, hd, bias=input_bias)
        self.k_proj = None if stored_pattern_as_static else nn.Linear(stored_pattern_size, hd, bias=input_bias)
        v_in = hd if pattern_projection_as_connected else pattern_projection_size
        self.v_proj = None if pattern_projection_as_static else nn.Linear(v_in, pd, bias=input_bias)
        for what, static, size in (("stored_pattern", stored_pattern_as_static, stored_pattern_size),
                                   ("state_pattern", state_pattern_as_static, input_size)):
            if static and size is not None and hidden_size is not None and size not in (hidden_size, hd):
                raise ValueError(f"{what}_as_static needs its input size ({size}) to be hidden_size ({hidden_size}, "
                                 f"repeated over heads) or num_heads * hidden_size ({hd})")
        if (pattern_projection_as_static and not pattern_projection_as_connected and not disable_out_projection
                and pattern_projection_size not in (pattern_size, pd)):
            raise ValueError(f"pattern_projection_as_static needs its input size ({pattern_projection_size}) to be "
                             f"pattern_size ({pattern_size}, repeated over heads) or num_heads * pattern_size ({pd})")
        self.normalize_hopfield_space = normalize_hopfield_space
        self.normalize_hopfield_space_eps = normalize_hopfield_space_eps
        if normalize_hopfield_space and normalize_hopfield_space_affine:
            self.p_norm_weight = nn.Parameter(torch.ones(hidden_size))
            self.p_norm_bias = nn.Parameter(torch.zeros(hidden_size))
        else:
            self.p_norm_weight = self.p_norm_bias = None
        self.bias_k = self.bias_v = None
        if concat_bias_pattern:
            if stored_pattern_as_static or pattern_projection_as_static:
                raise ValueError("concat_bias_pattern learns a projected stored pattern and projection, so it "
                                 "needs stored_pattern_as_static=False and pattern_projection_as_static=False")
            self.bias_k = nn.Parameter(torch.randn(hd) * 0.02)
            self.bias_v = nn.Parameter(torch.randn(pd) * 0.02)
        self.out_proj = None if disable_out_projection else nn.Linear(pd, output_size or input_size, bias=input_bias)
        self.output_size = (output_size or input_size) if not disable_out_projection else pd
        self.association = HopfieldAssociation(mapping, num_heads, alpha_learnable, alpha_bounds)
        self.post_name, self.post_fn = resolve_post(post)
        self.association_activation = None
        if association_activation is not None:
            fn = getattr(torch, association_activation, None) if isinstance(association_activation, str) else None
            if not callable(fn):
                raise ValueError(f"association_activation must name a torch function (e.g. 'tanh', 'relu', "
                                 f"'sigmoid'), got {association_activation!r}")
            self.association_activation = fn
        self.association_activation_name = association_activation
        self.dropout = nn.Dropout(dropout)
        if projection_init_std is not None:
            init_std = projection_init_std
            if not init_std > 0:
                raise ValueError(f"projection_init_std must be > 0 (hopfield-layers uses 0.02) or None, "
                                 f"got {init_std!r}")
            with torch.no_grad():
                for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
                    if proj is not None:
                        proj.weight.normal_(0.0, init_std)
                        if proj.bias is not None:
                            proj.bias.zero_()

    # ------------------------------------------------------------------ pieces of forward

    @property
    def mapping(self) -> HopfieldMapping:
        return self.association.mapping

    def _project(self, x: Tensor, proj: nn.Module | None, size: int | None, what: str,
                 any_size: bool = False) -> Tensor:
        """``(B, n, E)`` → ``(B, H, n, size)``; a static input is split into heads or repeated.

        ``any_size``: a static input of another size is repeated over heads as it is
        (pattern projections without an output projection, as in hopfield-layers).
        """
        b, n, e = x.shape
        h = self.num_heads
        if proj is not None:
            x = proj(x)
            e = x.shape[-1]
        if size is None or (any_size and e not in (size, h * size)):
            size = e  # static-only mode: the size comes from the input
        if e == size:
            return x[:, None].expand(b, h, n, e)  # hopfield-layers: repeat over heads
        if e == h * size:
            return x.view(b, n, h, size).transpose(1, 2)
        raise ValueError(f"{what} has last dim {e}; as static it must be {size} (repeated over heads) or "
                         f"num_heads * {size} = {h * size}")

    def _hopfield_norm(self, x: Tensor) -> Tensor:
        if not self.normalize_hopfield_space:
            return x
        return F.layer_norm(x, x.shape[-1:], self.p_norm_weight, self.p_norm_bias, self.normalize_hopfield_space_eps)

    def _beta(self, like: Tensor) -> Tensor | float:
        if isinstance(self.scaling, Tensor):
            return _per_head(self.scaling, self.num_heads, "scaling").to(like).view(1, -1, 1, 1)
        return self.scaling

    def _masks(self, b: int, length: int, s: int, stored_pattern_padding_mask: Tensor | None,
               association_mask: Tensor | None, extra: int, like: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """``(blocked bool, additive float)``, each ``(B or 1, H or 1, L or 1, S + extra)`` or None."""
        h = self.num_heads
        blocked = additive = None
        if stored_pattern_padding_mask is not None:
            pm = stored_pattern_padding_mask
            if pm.dtype == torch.uint8:
                pm = pm.bool()
            if pm.dtype != torch.bool:
                raise ValueError(f"stored_pattern_padding_mask must be bool (True = padding), got {pm.dtype}")
            if pm.shape != (b, s):
                raise ValueError(f"stored_pattern_padding_mask must be (batch, stored patterns) = ({b}, {s}), "
                                 f"got {tuple(pm.shape)}")
            blocked = F.pad(pm, (0, extra))[:, None, None, :]  # (B, 1, 1, S')
        if association_mask is not None:
            am = association_mask
            if am.dtype == torch.uint8:
                am = am.bool()
            if am.dim() == 2:
                am = am[None, None]
            elif am.dim() == 3:
                if am.shape[0] == b * h:
                    am = am.view(b, h, *am.shape[1:])
                elif am.shape[0] == b:
                    am = am[:, None]
                else:
                    raise ValueError(f"a 3-D association_mask must be (batch * num_heads, L, S) = ({b * h}, "
                                     f"{length}, {s}) or (batch, L, S), got {tuple(am.shape)}")
            elif am.dim() != 4:
                raise ValueError(f"association_mask must be (L, S), (batch * num_heads, L, S) or "
                                 f"(batch, num_heads, L, S), got {tuple(am.shape)}")
            if am.shape[-2:] != (length, s):
                raise ValueError(f"association_mask must end in (L, S) = ({length}, {s}), got {tuple(am.shape)}")
            am = F.pad(am, (0, extra))  # appended patterns are never masked
            if am.dtype == torch.bool:
                blocked = am if blocked is None else (blocked | am)
            elif am.is_floating_point():
                additive = am.to(like.dtype)
            else:
                raise ValueError(f"association_mask must be bool (True = not allowed) or float (added to the "
                                 f"scores), got {am.dtype}")
        return blocked, additive

    def _associate(self, input, stored_pattern_padding_mask=None, association_mask=None):
        """Run the association; returns ``(output (B, L, H*pd), weights (B, H, L, S'), values (B, H, S', pd))``."""
        if isinstance(input, Tensor):
            stored, state, projection = input, input, input
        else:
            if not isinstance(input, (tuple, list)) or len(input) != 3:
                raise ValueError("input must be a tensor or a (stored_pattern, state_pattern, pattern_projection) "
                                 "tuple")
            stored, state, projection = input
        for name, t in (("stored_pattern", stored), ("state_pattern", state), ("pattern_projection", projection)):
            if not isinstance(t, Tensor) or t.dim() != 3 or not t.is_floating_point():
                raise ValueError(f"{name} must be a floating-point tensor (B, n, E) "
                                 f"({'batch first' if self.batch_first else '(n, B, E) when batch_first=False'}), "
                                 f"got {getattr(t, 'shape', type(t).__name__)}")
        # Feature sizes and dtype against the layer's own sizes and weights, so a wrong input
        # names its argument instead of failing inside a LayerNorm or Linear.
        param = next(self.parameters(), None)
        for name, t, size, learned in (
                ("stored_pattern", stored, self.stored_pattern_size, self.k_proj or self.norm_stored_pattern),
                ("state_pattern", state, self.input_size, self.q_proj or self.norm_state_pattern),
                ("pattern_projection", projection, self.pattern_projection_size,  # connected: via k_proj first
                 None if self.pattern_projection_as_connected else self.v_proj or self.norm_pattern_projection)):
            if learned is not None and size is not None and t.shape[-1] != size:
                raise ValueError(f"{name} has {t.shape[-1]} features (last dim, shape {tuple(t.shape)}) but this "
                                 f"layer was built for {size}")
            if param is not None and (t.dtype != param.dtype or t.device != param.device):
                raise ValueError(f"{name} is {t.dtype} on {t.device} but the layer's weights are {param.dtype} on "
                                 f"{param.device}; move one with .to()")
        if isinstance(self.scaling, float) and not math.isfinite(self.scaling) or \
                isinstance(self.scaling, Tensor) and not bool(torch.isfinite(self.scaling).all()):
            raise ValueError(f"scaling (β) must be finite, got {self.scaling}")
        if not self.batch_first:
            stored, state, projection = (t.transpose(0, 1) for t in (stored, state, projection))
        if stored.shape[:2] != projection.shape[:2]:
            raise ValueError(f"stored_pattern {tuple(stored.shape)} and pattern_projection "
                             f"{tuple(projection.shape)} must share (batch, set size)")
        if self.norm_stored_pattern is not None:
            stored = self.norm_stored_pattern(stored)
        if self.norm_state_pattern is not None:
            state = self.norm_state_pattern(state)
        if self.norm_pattern_projection is not None:
            projection = self.norm_pattern_projection(projection)
        k = self._project(stored, self.k_proj, self.hidden_size, "stored_pattern")  # (B, H, S, hd)
        q = self._project(state, self.q_proj, self.hidden_size, "state_pattern")  # (B, H, L, hd)
        if self.pattern_projection_as_connected:
            projection = self.k_proj(projection)  # connected: through the stored patterns' projection first
        v = self._project(projection, self.v_proj, self.pattern_size, "pattern_projection",
                          any_size=self.out_proj is None)  # (B, H, S, pd)
        if q.shape[-1] != k.shape[-1]:
            raise ValueError(f"state patterns ({q.shape[-1]}) and stored patterns ({k.shape[-1]}) must have the "
                             f"same size in the association space")
        b = max(q.shape[0], k.shape[0])
        k, v = k.expand(b, *k.shape[1:]), v.expand(b, *v.shape[1:])
        q = q.expand(b, *q.shape[1:])
        q, k = self._hopfield_norm(q), self._hopfield_norm(k)
        if self.post_name != "identity":
            q, k, v = self.post_fn(q), self.post_fn(k), self.post_fn(v)
        s = k.shape[2]
        extra = 0
        if self.bias_k is not None:
            h = self.num_heads
            k = torch.cat([k, self.bias_k.view(1, h, 1, -1).expand(b, h, 1, -1).to(k)], dim=2)
            v = torch.cat([v, self.bias_v.view(1, h, 1, -1).expand(b, h, 1, -1).to(v)], dim=2)
            extra += 1
        if self.add_zero_association:
            k = F.pad(k, (0, 0, 0, 1))
            v = F.pad(v, (0, 0, 0, 1))
            extra += 1
        length = q.shape[2]
        blocked, additive = self._masks(b, length, s, stored_pattern_padding_mask, association_mask, extra, q)
        beta = self._beta(q)

        def weights(state_: Tensor) -> Tensor:
            scores = (state_ * beta) @ k.transpose(-1, -2)  # (B, H, L, S')
            if additive is not None:
                scores = scores + additive
            if blocked is not None:
                scores = scores.masked_fill(blocked, -math.inf)
            return self.association(scores)

        xi = weights(q)
        xi = self._update(q, k, xi, weights)
        out = self.dropout(xi) @ v  # (B, H, L, pd)
        if self.post_name != "identity":
            out = self.post_fn(out)
        out = out.transpose(1, 2).reshape(b, length, -1)  # (B, L, H*pd)
        return out, xi, v

    def _update(self, q: Tensor, k: Tensor, xi: Tensor, weights: Callable[[Tensor], Tensor]) -> Tensor:
        """hopfield-layers' iteration: per head, update until ``update_steps_max`` or ``update_steps_eps``."""
        h = self.num_heads
        smax = self.update_steps_max
        if isinstance(smax, int) and smax == 0:
            return xi
        if smax is None:
            limit = torch.full((h,), -1, dtype=torch.long, device=xi.device)
        else:
            limit = _per_head(smax, h, "update_steps_max", torch.long).to(device=xi.device, dtype=torch.long)
        eps = _per_head(self.update_steps_eps, h, "update_steps_eps").to(device=xi.device, dtype=xi.dtype)
        unbounded = limit < 0
        active = (limit > 0) | unbounded  # (H,)
        step = 0
        while bool(active.any()):
            step += 1
            if step > UNBOUNDED_STEPS_CAP:
                warnings.warn(f"Hopfield: update_steps_max=None did not meet update_steps_eps in "
                              f"{UNBOUNDED_STEPS_CAP} steps; stopping", RuntimeWarning, stacklevel=3)
                break
            state = xi @ k  # (B, H, L, hd): the retrieved state in the association space
            if self.post_name != "identity":
                state = self.post_fn(state)
            xi_new = weights(state)
            on = active.view(1, h, 1, 1)
            xi_new = torch.where(on, xi_new, xi)
            with torch.no_grad():
                moved = (xi_new - xi).flatten(2).norm(dim=-1).amax(0)  # (H,)
            active = active & ((step < limit) | unbounded) & (moved > eps)
            xi = xi_new
        return xi

    # ---------------------------------------------------------------------- public API

    def forward(self, input: Tensor | tuple[Tensor, Tensor, Tensor],
                stored_pattern_padding_mask: Tensor | None = None, association_mask: Tensor | None = None,
                return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Associate and retrieve.

        Args:
            input: ``(B, L, E)`` (self-association) or ``(stored_pattern (B, S, E_s),
                state_pattern (B, L, E), pattern_projection (B, S, E_p))``; ``(n, B, E)``
                each when ``batch_first=False``.
            stored_pattern_padding_mask: ``(B, S)`` bool, **True = padding** (ignored),
                as in ``hopfield-layers`` / ``nn.MultiheadAttention``.
            association_mask: ``(L, S)``, ``(B * num_heads, L, S)`` (hopfield-layers),
                ``(B, L, S)`` or ``(B, num_heads, L, S)``; bool **True = not allowed**, or
                float **added to the scores** (``-inf`` blocks).
            return_weights: also return the association weights ``(B, H, L, S')``
                (``S' = S`` plus one per ``concat_bias_pattern`` / ``add_zero_association``).

        Returns:
            ``(B, L, output_size)`` (``(L, B, …)`` if not ``batch_first``), and the weights
            if asked. A state with every stored pattern masked retrieves zeros.
        """
        out, xi, _ = self._associate(input, stored_pattern_padding_mask, association_mask)
        if self.out_proj is not None:
            out = self.out_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if self.association_activation is not None:
            out = self.association_activation(out)
        return (out, xi) if return_weights else out

    def get_association_matrix(self, input: Tensor | tuple[Tensor, Tensor, Tensor],
                               stored_pattern_padding_mask: Tensor | None = None,
                               association_mask: Tensor | None = None) -> Tensor:
        """The association weights ``(B, num_heads, L, S')`` after the update steps (no grad)."""
        with torch.no_grad():
            return self._associate(input, stored_pattern_padding_mask, association_mask)[1]

    def get_projected_pattern_matrix(self, input: Tensor | tuple[Tensor, Tensor, Tensor],
                                     stored_pattern_padding_mask: Tensor | None = None,
                                     association_mask: Tensor | None = None) -> Tensor:
        """The projected pattern projections (values) ``(B, num_heads, S', pattern_size)`` (no grad)."""
        with torch.no_grad():
            return self._associate(input, stored_pattern_padding_mask, association_mask)[2]

    @property
    def state_pattern_dim(self) -> int | None:
        """hopfield-layers' name for ``input_size``."""
        return self.input_size

    @property
    def stored_pattern_dim(self) -> int | None:
        return self.stored_pattern_size

    @property
    def pattern_projection_dim(self) -> int | None:
        return self.pattern_projection_size

    def extra_repr(self) -> str:
        beta = "per-head" if isinstance(self.scaling, Tensor) else f"{self.scaling:.4g}"
        return (f"num_heads={self.num_heads}, hidden_size={self.hidden_size}, pattern_size={self.pattern_size}, "
                f"scaling={beta}, update_steps_max={self.update_steps_max}, post={self.post_name}, "
                f"static_execution={self.static_execution}")
