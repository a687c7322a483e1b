"""Probability mappings over scores: the attention view of kernel regression.

Adaptive normalisation (α-entmax family) and fixed normalisation (normalised ReLUⁿ,
ReLU-max), plus the top-k baselines, all with the ``torch.softmax(x, dim)`` calling style.
"""

from .entmax import (Entmax, Entmax15, Softmax, Sparsemax, alpha_from_parameter, alpha_parameter, entmax, entmax15,
                     entmax_backward, masked_softmax, softmax, sparsemax)
from .fixed import NormalizedReLU, ReLUMax, kernel_affine, normalized_relu, relumax
from .registry import ALIASES, METHODS, Mapping, resolve_mapping
from .threshold import entmax15_threshold, entmax_from_threshold, entmax_threshold, sparsemax_threshold
from .topk import TopkSoftmax, TopkUniform, topk_softmax, topk_uniform

__all__ = [
    "softmax", "sparsemax", "entmax15", "entmax", "normalized_relu", "relumax", "topk_softmax",
    "topk_uniform", "masked_softmax", "entmax_backward", "kernel_affine", "alpha_parameter", "alpha_from_parameter",
    "Softmax", "Sparsemax", "Entmax15", "Entmax", "NormalizedReLU", "ReLUMax", "TopkSoftmax", "TopkUniform",
    "Mapping", "resolve_mapping", "METHODS", "ALIASES",
    "sparsemax_threshold", "entmax15_threshold", "entmax_threshold", "entmax_from_threshold",
]
