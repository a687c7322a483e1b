"""Learnable α per layer and head, as real parameters of a ``transformers`` model.

Each attention module that dispatches through ``AttentionInterface`` gets one parameter
``kernelattn_alpha_param`` of shape ``(num_query_heads,)``: the unconstrained θ of the
library's parametrisation α = 1 + softplus(θ) (:func:`kernelattn.mappings.alpha_parameter`),
so gradient steps never leave α > 1. Being an ordinary parameter it is trained by any
optimiser, saved by ``save_pretrained`` and loaded by ``from_pretrained``.

Loading needs the parameters to exist *before* the checkpoint is read (``transformers``
drops checkpoint keys the model does not have). The model's config records
``config.kernelattn = {"method": ..., "learn_alpha": True, ...}``, and the hook that
:func:`install_construction_hook` installs adds the parameters while ``transformers``
builds such a model, whatever attention implementation is requested.

θ is a 1-D parameter whose name contains neither ``bias`` nor ``norm``: an optimiser set-up
that decays every such tensor (``transformers.Trainer``'s default) pulls α towards
1 + log 2 ≈ 1.69; exclude ``kernelattn_alpha_param`` from weight decay to avoid that.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import torch
from torch import Tensor, nn

from ...mappings import alpha_from_parameter, alpha_parameter

__all__ = ["ALPHA_PARAM", "attention_modules", "attach_alpha", "alphas", "install_construction_hook",
           "kernelattn_config"]

ALPHA_PARAM = "kernelattn_alpha_param"

_hook_handle = None


@lru_cache(maxsize=None)
def _dispatches_through_interface(cls: type) -> bool:
    """Whether ``cls.forward`` calls ``ALL_ATTENTION_FUNCTIONS`` (the module handed to our function).

    ``transformers`` itself decides whether a model can switch implementation by reading
    its source; reading the forward of each class finds exactly the modules that our
    attention function receives as ``module`` (e.g. ``BertSelfAttention``, not its
    ``BertAttention`` wrapper).
    """
    forward = getattr(cls, "forward", None)
    if forward is None or cls.__module__.startswith("torch."):
        return False
    try:
        source = inspect.getsource(forward)
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in source


def kernelattn_config(module: nn.Module) -> dict | None:
    """The ``kernelattn`` record of the module's config, or ``None``."""
    cfg = getattr(getattr(module, "config", None), "kernelattn", None)
    return cfg if isinstance(cfg, dict) else None


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every attention module that calls ``AttentionInterface``."""
    return [(n, m) for n, m in model.named_modules() if _dispatches_through_interface(type(m))]


def num_query_heads(module: nn.Module) -> int:
    """Query heads of an attention module: its own attribute, else its config's."""
    for attr in ("num_heads", "num_attention_heads", "n_head"):
        h = getattr(module, attr, None)
        if isinstance(h, int) and h > 0:
            return h
    h = getattr(getattr(module, "config", None), "num_attention_heads", None)
    if isinstance(h, int) and h > 0:
        return h
    raise ValueError(f"cannot tell how many query heads {type(module).__name__} has (no num_heads attribute and "
                     "no config.num_attention_heads); learn_alpha needs it")


def attach_alpha(module: nn.Module, alpha_init: float) -> nn.Parameter:
    """Give ``module`` a learnable α per query head, initialised to ``alpha_init`` (> 1).

    Returns the existing parameter unchanged if the module already has one (e.g. restored
    from a checkpoint), so re-running :func:`~kernelattn.integrations.hf.sparsify` never
    resets learned values.
    """
    existing = getattr(module, ALPHA_PARAM, None)
    if isinstance(existing, nn.Parameter):
        return existing
    with torch.device("cpu"):  # real values even inside transformers' meta-device init context
        theta = alpha_parameter(alpha_init, (num_query_heads(module),))  # (H,) float32
    ref = next(module.parameters(), None)
    if ref is not None and ref.device.type != "meta":
        theta = nn.Parameter(theta.detach().to(ref.device))
    module.register_parameter(ALPHA_PARAM, theta)
    return theta


def module_alpha(module: nn.Module) -> Tensor | None:
    """α ``(H,)`` in float32 for a module with the parameter, else ``None`` (differentiable)."""
    theta = getattr(module, ALPHA_PARAM, None)
    if theta is None:
        return None
    # θ may have been cast with the model (bf16); α is used in float32 like the scores.
    return alpha_from_parameter(theta.float())


def alphas(model: nn.Module) -> dict[str, Tensor]:
    """Learned α per head, by attention-module name: ``{name: (H,) float tensor}`` (detached)."""
    out = {}
    for name, m in attention_modules(model):
        a = module_alpha(m)
        if a is not None:
            out[name] = a.detach().cpu()
    return out


def _on_submodule_registered(parent: nn.Module, name: str, submodule: nn.Module):
    # Cheap test first: this hook sees every module assignment in the process.
    cfg = kernelattn_config(submodule)
    if cfg is None or not cfg.get("learn_alpha"):
        return None
    if not _dispatches_through_interface(type(submodule)):
        return None
    alpha_init = cfg.get("alpha_init")
    if alpha_init is None:
        raise ValueError(f"config.kernelattn has learn_alpha=True but no alpha_init: {cfg}")
    with torch.no_grad():
        attach_alpha(submodule, float(alpha_init))
    return None


def install_construction_hook() -> None:
    """Add α parameters to attention modules as a model whose config asks for them is built.

    Uses PyTorch's global module-registration hook (idempotent; acts only on modules whose
    ``config.kernelattn["learn_alpha"]`` is true).
    """
    global _hook_handle
    if _hook_handle is None:
        _hook_handle = nn.modules.module.register_module_module_registration_hook(_on_submodule_registered)
