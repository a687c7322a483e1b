"""The attention function ``transformers`` calls for ``attn_implementation="kernelattn_<method>"``.

Calling convention (``transformers.AttentionInterface``, same as its ``sdpa`` function)::

    attn_output, attn_weights = fn(module, query, key, value, attention_mask,
                                   dropout=0.0, scaling=None, is_causal=None, **kwargs)

``query`` ``(B, Hq, Lq, D)``, ``key``/``value`` ``(B, Hkv, Lk, D)`` (the KV cache already
appended), ``attention_mask`` the boolean mask of :func:`transformers.masking_utils.sdpa_mask`
(``(B, 1, Lq, Lk)``, True = attend, padding/packing/sliding window folded in) or ``None``
when the pattern is plain causal or plain full, or a float mask a user passed in 4-D.
``attn_output`` is ``(B, Lq, Hq, D)`` — transposed, as the models expect.

``None`` masks are read exactly as the ``sdpa`` implementation reads them, so both see the
same attention pattern: causal (top-left; keys beyond ``Lq`` cropped, the empty slots of a
static cache at prefill) for a causal module with ``Lq > 1``, all keys otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...attention import kernel_attention, kernel_attention_step
from ...mappings import entmax as entmax_fn
from ...mappings.registry import Mapping, resolve_mapping
from .alpha import ALPHA_PARAM, kernelattn_config, module_alpha

__all__ = ["PREFIX", "make_attention_function", "decode_attention", "prefill_attention", "attention_weights"]

PREFIX = "kernelattn_"
# kwargs of the sdpa convention that change the math and that we cannot honour
_REFUSED = {"softcap": "logit soft-capping", "s_aux": "attention sinks", "sinks": "attention sinks"}


def decode_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None, scale: float | None,
                     enable_gqa: bool, mapping: Mapping, alpha: Tensor | None, options: dict) -> Tensor:
    """One decoding step: ``Lq`` new queries (usually 1) against the whole KV cache.

    The single call site of the decoding path, so that a paged decoding cache can replace it.
    Shapes: ``query`` ``(B, Hq, Lq, D)``, ``key``/``value`` ``(B, Hkv, Lk, D)``; returns ``(B, Hq, Lq, D)``.
    """
    return kernel_attention_step(query, key, value, attn_mask=attn_mask, scale=scale, enable_gqa=enable_gqa,
                                 method=mapping, alpha=alpha, **options)


def prefill_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None, is_causal: bool,
                      scale: float | None, enable_gqa: bool, mapping: Mapping, alpha: Tensor | None,
                      dropout: float, options: dict) -> Tensor:
    """A whole sequence (training, encoders, prompt prefill): ``(B, Hq, Lq, D) -> (B, Hq, Lq, D)``."""
    return kernel_attention(query, key, value, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                            enable_gqa=enable_gqa, method=mapping, alpha=alpha, dropout_p=dropout, **options)


def attention_weights(query: Tensor, key: Tensor, attn_mask: Tensor | None, is_causal: bool, scale: float,
                      mapping: Mapping, alpha: Tensor | None) -> Tensor:
    """The attention weights, materialised ``(B, Hq, Lq, Lk)`` in float32 (for ``output_attentions``).

    Quadratic in length: meant for inspection on small inputs.
    """
    B, Hq, Lq, _ = query.shape
    Hkv, Lk = key.shape[1], key.shape[2]
    k = key.float().repeat_interleave(Hq // Hkv, dim=1)  # (B, Hq, Lk, D)
    s = scale * (query.float() @ k.transpose(-2, -1))  # (B, Hq, Lq, Lk)
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask.float()
    if is_causal:
        tri = torch.ones(Lq, Lk, dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~tri, float("-inf"))
    if alpha is not None:
        return entmax_fn(s, alpha=alpha.view(1, Hq, 1, 1), dim=-1)
    return mapping(s, dim=-1)


def _resolve(module: nn.Module, method: str) -> tuple[Mapping, Tensor | None, dict]:
    """Mapping, learned α (or ``None``) and mapping options for this module and method."""
    cfg = kernelattn_config(module) or {}
    own = cfg.get("method") == method  # the config's settings belong to the method it records
    topk = cfg.get("topk") if own else None
    try:
        mapping = resolve_mapping(method, topk=topk)
    except ValueError as e:
        if method.startswith("topk"):
            raise ValueError(f"{PREFIX}{method} needs k: use kernelattn.integrations.hf.sparsify(model, "
                             f"method={method!r}, topk=k)") from e
        raise
    alpha = None
    if own and cfg.get("learn_alpha"):
        alpha = module_alpha(module)
        if alpha is None:
            raise ValueError(
                f"config.kernelattn asks for learned α but {type(module).__name__} has no {ALPHA_PARAM}: the model was "
                "built before kernelattn.integrations.hf.register() was called, so its saved α were dropped. Call "
                "register() first, then from_pretrained(...)")
    return mapping, alpha, dict(cfg.get("options") or {}) if own else {}


def _float_bias_mask(position_bias: Tensor, attn_mask: Tensor | None) -> Tensor:
    """Fold a relative-position bias (T5-style, added to the scores) into a float mask."""
    if attn_mask is None:
        return position_bias
    if attn_mask.dtype == torch.bool:
        return position_bias.masked_fill(~attn_mask, float("-inf"))
    return position_bias + attn_mask


def kernelattn_attention_forward(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                                 attention_mask: Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                                 is_causal: bool | None = None, *, method: str, **kwargs
                                 ) -> tuple[Tensor, Tensor | None]:
    """``transformers`` attention function for one kernelattn method (see the module docstring)."""
    for name, what in _REFUSED.items():
        if kwargs.get(name) is not None:
            raise ValueError(f"{PREFIX}{method}: this model uses {what} ({name}=...), which kernelattn does not "
                             "implement; keep attn_implementation='eager' or 'sdpa' for it")
    cache = kwargs.get("cache")
    if cache is not None and type(cache).__name__ == "PagedAttentionCache":
        raise ValueError(f"{PREFIX}{method}: continuous batching (PagedAttentionCache) is not supported; use "
                         "model.generate with the default dynamic or static cache")
    mapping, alpha, options = _resolve(module, method)
    is_softmax = mapping.is_softmax and alpha is None
    if dropout and not is_softmax:
        raise ValueError(
            f"{PREFIX}{method}: attention dropout={dropout} while training, but dropout on attention weights is "
            "defined for softmax only. Build the model with attention dropout 0 (config.attention_dropout / "
            "attn_pdrop / attention_probs_dropout_prob = 0.0) or set the module's dropout to 0")

    B, Hq, Lq, _ = query.shape
    Lk = key.shape[2]
    enable_gqa = key.shape[1] != Hq
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    causal = bool(is_causal) and Lq > 1 and attention_mask is None
    position_bias = kwargs.get("position_bias")
    if causal and Lk > Lq:
        # A None mask with more keys than queries only happens at a static cache's prefill:
        # the keys past Lq are empty slots (the sdpa implementation crops them the same way).
        key, value = key[:, :, :Lq], value[:, :, :Lq]
        position_bias = position_bias[..., :Lq] if position_bias is not None else None
    mask = attention_mask
    if position_bias is not None:
        mask = _float_bias_mask(position_bias, mask)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5

    if Lq == 1 and dropout == 0.0:
        out = decode_attention(query, key, value, mask, scale, enable_gqa, mapping, alpha, options)
    else:
        out = prefill_attention(query, key, value, mask, causal, scale, enable_gqa, mapping, alpha, dropout,
                                options)
    weights = None
    if kwargs.get("output_attentions"):
        weights = attention_weights(query, key, mask, causal, scale, mapping, alpha).to(query.dtype)
    return out.transpose(1, 2).contiguous(), weights  # (B, Lq, Hq, D)


def make_attention_function(method: str):
    """The registered function for ``kernelattn_<method>`` (``method`` canonical, e.g. ``entmax15``)."""

    def attention_function(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                           **kwargs):
        return kernelattn_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                            scaling=scaling, is_causal=is_causal, method=method, **kwargs)

    attention_function.__name__ = attention_function.__qualname__ = f"{PREFIX}{method}_attention_forward"
    attention_function.__doc__ = f"``attn_implementation='{PREFIX}{method}'``: {kernelattn_attention_forward.__doc__}"
    return attention_function
