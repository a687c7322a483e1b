"""Neural-network modules built on the attention operator."""

from .attention import KernelMultiheadAttention
from .leaky import leaky_average

__all__ = ["KernelMultiheadAttention", "leaky_average"]
