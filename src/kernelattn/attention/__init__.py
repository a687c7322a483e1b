"""The attention operator: exact kernel attention with memory linear in the sequence.

``kernel_attention`` has PyTorch SDPA's calling convention and takes any mapping of
:mod:`kernelattn.mappings` (SPEC §2). Softmax runs on PyTorch's fused kernel; α-entmax
may run on ``adasplash`` (CUDA), and otherwise runs on our support-restricted path
(threshold search, products and backward on the support only, :mod:`._sparse`); every
other mapping, and dense α-entmax blocks, run on the blocked path, which holds one block
of query rows against the admissible keys at a time and saves one threshold per query
row for an exact, recomputing backward. :class:`KernelKVCache` is a decoding cache whose
per-page key bounds let a step skip, exactly, the pages that cannot reach the support.
"""

from .dispatch import BACKENDS, adasplash_available, last_backend, select_backend
from .cache import KernelKVCache
from .functional import KERNELS, kernel_attention, kernel_attention_step, kernel_mapping

__all__ = [
    "kernel_attention", "kernel_attention_step", "kernel_mapping", "KERNELS", "KernelKVCache",
    "select_backend", "last_backend", "adasplash_available", "BACKENDS",
]
