"""``register()`` and ``sparsify()``: kernelattn methods as ``transformers`` attention implementations."""

from __future__ import annotations

from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ...attention.functional import _resolve as check_method_options
from ...mappings.registry import METHODS, resolve_mapping
from .alpha import ALPHA_PARAM, attach_alpha, attention_modules, install_construction_hook, kernelattn_config
from .attention import PREFIX, make_attention_function

__all__ = ["register", "sparsify", "implementation_name"]


def _canonical(method: str, topk: int | None = None) -> str:
    """Canonical method name (``biweight`` -> ``entmax15``), with the library's error on a bad name."""
    if not isinstance(method, str):
        raise ValueError(f"method must be a string such as 'entmax15', got {type(method).__name__}")
    return resolve_mapping(method, topk=topk if topk is not None else 1).name


def implementation_name(method: str) -> str:
    """``attn_implementation`` string for ``method``: ``"entmax15"`` -> ``"kernelattn_entmax15"``."""
    return PREFIX + _canonical(method)


def _register_one(method: str) -> str:
    name = PREFIX + method
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, make_attention_function(method))
        # Our function consumes sdpa's mask format: boolean (B, 1, Lq, Lk), True = attend, or None
        # for plain causal / plain full attention (read back exactly as the sdpa function does).
        AttentionMaskInterface.register(name, sdpa_mask)
    return name


def register(methods: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """Register ``kernelattn_<method>`` attention implementations with ``transformers``.

    After this, ``from_pretrained(..., attn_implementation="kernelattn_entmax15")`` (or
    ``from_config``, or ``model.set_attn_implementation``) runs the model's attention with
    that mapping. Also installs the hook that re-creates learned-α parameters while a model
    whose config records them is built, so ``from_pretrained`` restores them: call
    ``register()`` before loading such a model. Idempotent.

    Args:
        methods: method names to register; default every method of
            :data:`kernelattn.mappings.METHODS` (``softmax``, ``sparsemax``, ``entmax15``,
            ``entmax43``, ``normalized_relu``, ``relumax``, ``topk_softmax``,
            ``topk_uniform``, ``normalized_relu_paper``). ``entmax:<α>`` names may be added too.

    Returns:
        The registered implementation names.
    """
    install_construction_hook()
    names = []
    for m in (METHODS if methods is None else methods):
        names.append(_register_one(_canonical(m)))
    return names


def sparsify(model, method: str = "entmax15", learn_alpha: bool = False, alpha_init: float | None = None,
             topk: int | None = None, **mapping_options):
    """Switch a loaded ``transformers`` model's attention to a kernelattn mapping, in place.

    Args:
        model: a ``PreTrainedModel`` whose attention dispatches through ``AttentionInterface``
            (Llama, Qwen2, Mistral, GPT-2, BERT, ModernBERT, ... in recent ``transformers``).
        method: ``softmax``, ``sparsemax``, ``entmax15``, ``entmax43``, ``entmax:<α>``,
            ``normalized_relu[:<n>]``, ``relumax``, ``topk_softmax``, ``topk_uniform``, or a
            kernel alias (``biweight``, ...).
        learn_alpha: give every attention module a learnable α per query head (α-entmax,
            kept > 1), a real parameter saved by ``save_pretrained``. Needs an α-entmax
            method (``sparsemax``, ``entmax15``, ``entmax43``, ``entmax:<α>``).
        alpha_init: initial α for ``learn_alpha`` (> 1); default the method's α.
        topk: ``k`` for the top-k methods.
        **mapping_options: ``bias``/``relu_scale`` (normalized_relu), ``temperature`` (relumax).

    Returns:
        ``model`` (same object), with ``config.kernelattn`` recording the choice so that a
        saved model reloads with it (``register()`` first). α parameters that a module
        already has (restored, or from an earlier call) are kept as they are; with
        ``learn_alpha=False`` they stay on the model unused.

    Raises:
        ValueError: unknown method, ``learn_alpha`` with a non-entmax method, α ≤ 1, a model
            that does not use ``AttentionInterface``, or a config that records learned α the
            model lost (loaded before ``register()``).
    """
    mapping = resolve_mapping(method, topk=topk)
    # kernel_attention's own validation: topk only for top-k methods, options only where they apply
    check_method_options(mapping, None, topk, mapping_options)
    if alpha_init is not None and not learn_alpha:
        raise ValueError("alpha_init is the starting value of a learned α: pass learn_alpha=True with it "
                         f"(or method='entmax:{alpha_init}' for a fixed α)")
    if learn_alpha:
        if mapping.kind != "entmax" or mapping.alpha is None or mapping.alpha <= 1:
            raise ValueError(f"learn_alpha=True learns α of α-entmax; method={method!r} is not an α-entmax with "
                             "α > 1: use sparsemax, entmax15, entmax43 or entmax:<α>")
        alpha_init = mapping.alpha if alpha_init is None else float(alpha_init)
        if not alpha_init > 1:
            raise ValueError(f"alpha_init must be > 1 (1 is softmax), got {alpha_init}")
    if not hasattr(model, "set_attn_implementation") or not type(model)._can_set_attn_implementation():
        raise ValueError(f"{type(model).__name__} does not dispatch its attention through transformers' "
                         "AttentionInterface, so its attention cannot be swapped")
    modules = attention_modules(model)
    if not modules:
        raise ValueError(f"found no attention module calling AttentionInterface in {type(model).__name__}")

    name = _register_one(mapping.name)
    register()  # all names and the construction hook, so a saved model reloads
    record = {"method": mapping.name, "learn_alpha": bool(learn_alpha), "alpha_init": alpha_init,
              "topk": mapping.k, "options": dict(mapping_options)}
    configs = {id(model.config): model.config}
    configs.update({id(m.config): m.config for _, m in modules if getattr(m, "config", None) is not None})
    if learn_alpha:
        for qualname, m in modules:  # check every module before changing any
            old = kernelattn_config(m)
            if old and old.get("learn_alpha") and getattr(m, ALPHA_PARAM, None) is None:
                raise ValueError(f"{qualname}: the config records learned α (config.kernelattn) but the module has "
                                 "none: the model was loaded before kernelattn.integrations.hf.register(), which "
                                 "dropped them. Call register() before from_pretrained")
        for _, m in modules:
            attach_alpha(m, alpha_init)
    for cfg in configs.values():
        cfg.kernelattn = dict(record)
    model.set_attn_implementation(name)
    return model
