"""Load weights trained with ``hopfield-layers`` into this package's layers.

``hopfield-layers`` keeps the three input projections of a ``Hopfield`` in one packed
``association_core.in_proj_weight`` (rows: state, stored, projection — each only when it
is not static) or in separate ``q/k/v_proj_weight``, and the biases in one packed
``in_proj_bias`` (the projection's slice is always there). Here each projection is its
own ``nn.Linear``. :func:`load_hopfield_layers_state_dict` splits the packed tensors and
renames the rest (and drops ``bias_k``/``bias_v`` when the layer has no bias pattern:
hopfield-layers never uses them); every other key (input LayerNorms, pooling/lookup weights, the
encoder/decoder feed-forward and norms) already has hopfield-layers' name.
"""

from __future__ import annotations

from torch import Tensor, nn

from .layers import Hopfield

__all__ = ["load_hopfield_layers_state_dict", "convert_hopfield_layers_state_dict"]

_CORE = "association_core."


def _convert_hopfield(hop: Hopfield, sd: dict[str, Tensor], prefix: str, out: dict[str, Tensor]) -> None:
    core = prefix + _CORE
    h = hop.num_heads
    hd = h * hop.hidden_size if hop.hidden_size else 0
    pd = h * hop.pattern_size if hop.pattern_size else 0
    parts = [(hop.q_proj, "q", hd), (hop.k_proj, "k", hd), (hop.v_proj, "v", pd)]
    if core + "in_proj_weight" in sd:
        w, start = sd[core + "in_proj_weight"], 0
        for proj, _, rows in parts:
            if proj is not None:
                out[f"{prefix}{_}_proj.weight"] = w[start:start + rows]
                start += rows
        if start != w.shape[0]:
            raise ValueError(f"{core}in_proj_weight has {w.shape[0]} rows, this layer's projections need {start}; "
                             "were both layers built with the same sizes and *_as_static flags?")
    else:
        for proj, name, _ in parts:
            if proj is not None:
                out[f"{prefix}{name}_proj.weight"] = sd[f"{core}{name}_proj_weight"]
    if core + "in_proj_bias" in sd:
        b, start = sd[core + "in_proj_bias"], 0
        for proj, name, rows in parts:
            # The packed bias always holds the projection's slice, even when it is static.
            if proj is not None or name == "v":
                if proj is not None:
                    out[f"{prefix}{name}_proj.bias"] = b[start:start + rows]
                start += rows
    for name in ("out_proj.weight", "out_proj.bias", "p_norm_weight", "p_norm_bias"):
        if core + name in sd:
            out[prefix + name] = sd[core + name]
    # hopfield-layers creates bias_k/bias_v for concat_bias_pattern but never concatenates
    # them; a layer built with concat_bias_pattern=False reproduces its outputs, so they are
    # dropped then.
    for name in ("bias_k", "bias_v"):
        if core + name in sd and getattr(hop, name) is not None:
            out[prefix + name] = sd[core + name].reshape(-1)
    if prefix + "_Hopfield__scaling" in sd:
        out[prefix + "scaling"] = sd[prefix + "_Hopfield__scaling"]


def convert_hopfield_layers_state_dict(module: nn.Module, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Translate a hopfield-layers ``state_dict`` into ``module``'s key names and shapes.

    Args:
        module: a :class:`Hopfield`, ``HopfieldPooling``, ``HopfieldLayer``,
            ``HopfieldEncoderLayer``/``HopfieldDecoderLayer`` or any module containing
            them, built with the same arguments as the hopfield-layers model.
        state_dict: the hopfield-layers model's ``state_dict()``.

    Returns:
        A state dict for ``module.load_state_dict``.
    """
    out: dict[str, Tensor] = {}
    hop_prefixes = [name + "." if name else "" for name, m in module.named_modules() if isinstance(m, Hopfield)]
    for prefix in hop_prefixes:
        _convert_hopfield(dict(module.named_modules())[prefix[:-1]] if prefix else module, state_dict, prefix, out)
    for key, value in state_dict.items():
        if any(key.startswith(p + _CORE) or key == p + "_Hopfield__scaling" for p in hop_prefixes):
            continue
        learned = key.split(".")[-1] in ("pooling_weights", "lookup_weights", "target_weights")
        # hopfield-layers stores them (quantity, 1, E) when batch_first=False; here always (1, quantity, E).
        out[key] = value.transpose(0, 1) if learned and value.dim() == 3 and value.shape[0] != 1 else value
    return out


def load_hopfield_layers_state_dict(module: nn.Module, state_dict: dict[str, Tensor], strict: bool = True):
    """``module.load_state_dict(convert_hopfield_layers_state_dict(module, state_dict), strict)``."""
    return module.load_state_dict(convert_hopfield_layers_state_dict(module, state_dict), strict=strict)
