"""The attention operator: exact kernel attention with memory linear in the sequence.

``kernel_attention`` has PyTorch SDPA's calling convention and takes any mapping of
:mod:`kernelattn.mappings` (SPEC §2). Softmax runs on PyTorch's fused kernel; α-entmax
may run on ``adasplash`` (CUDA); everything else, and α-entmax anywhere, on our blocked
path, which holds one block of query rows against the admissible keys at a time and
saves one threshold per query row for an exact, recomputing backward.
"""

from .dispatch import BACKENDS, adasplash_available, last_backend, select_backend
from .functional import KERNELS, kernel_attention, kernel_attention_step, kernel_mapping

__all__ = [
    "kernel_attention", "kernel_attention_step", "kernel_mapping", "KERNELS",
    "select_backend", "last_backend", "adasplash_available", "BACKENDS",
]
