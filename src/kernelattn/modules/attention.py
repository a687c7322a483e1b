"""``KernelMultiheadAttention``: a drop-in self-attention with a pluggable kernel."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._validation import check_bool, check_int, check_probability, check_tensor
from ..attention import kernel_attention
from ..mappings import alpha_from_parameter, alpha_parameter, resolve_mapping

__all__ = ["KernelMultiheadAttention"]


class KernelMultiheadAttention(nn.Module):
    """Multi-head self-attention whose probability mapping is chosen by name.

    Args:
        embed_dim: model width ``C``.
        num_heads: query heads ``H`` (``C % H == 0``).
        num_kv_heads: key/value heads for grouped-query attention (divides ``H``);
            default ``H``.
        method: mapping name (``softmax``, ``sparsemax``, ``entmax15``, ``entmax43``,
            ``normalized_relu``, ``relumax``, ``topk_softmax``, ``topk_uniform``,
            ``normalized_relu_paper``, ``entmax:<α>``, or the kernel aliases).
        topk: ``k`` for the top-k methods.
        learn_alpha: learn α per head (α-entmax); initialised from ``method``'s α (1.5
            if the method is not an entmax) and kept > 1 as ``1 + softplus(θ)``.
        causal: mask future keys.
        dropout: dropout on the output projection (attention-weight dropout only exists
            for softmax in PyTorch's kernel, so it is not used for a fair comparison).
        bias: bias in the projections.

    Shapes:
        ``forward(x)``: ``(B, T, C) -> (B, T, C)``; an optional boolean ``attn_mask``
        broadcastable to ``(B, H, T, T)`` (True = attend), e.g. for padding.
    """

    def __init__(self, embed_dim: int, num_heads: int, num_kv_heads: int | None = None, method: str = "softmax",
                 topk: int | None = None, learn_alpha: bool = False, causal: bool = True, dropout: float = 0.0,
                 bias: bool = False):
        super().__init__()
        embed_dim = check_int(embed_dim, "embed_dim", minimum=1, hint=" (the model width C)")
        num_heads = check_int(num_heads, "num_heads", minimum=1)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        num_kv_heads = num_heads if num_kv_heads is None else check_int(num_kv_heads, "num_kv_heads", minimum=1)
        check_bool(learn_alpha, "learn_alpha")
        check_bool(causal, "causal")
        check_bool(bias, "bias")
        dropout = check_probability(dropout, "dropout")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.mapping = resolve_mapping(method, topk=topk)
        self.causal = causal
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.kv_proj = nn.Linear(embed_dim, 2 * num_kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.learn_alpha = learn_alpha
        if learn_alpha and self.mapping.kind != "entmax":
            raise ValueError(f"learn_alpha=True learns the α of α-entmax, but method {self.mapping.name!r} has no α; "
                             "use an entmax method (e.g. 'entmax15', 'entmax:1.25' or 'softmax') or learn_alpha=False")
        if learn_alpha:
            a0 = self.mapping.alpha if self.mapping.alpha > 1 else 1.5
            self.alpha_param = alpha_parameter(a0, (num_heads,))

    @property
    def alpha(self) -> Tensor | None:
        """Per-head α when learned, else ``None``."""
        return alpha_from_parameter(self.alpha_param) if self.learn_alpha else None

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        check_tensor(x, "x", dims=(3,))
        if x.shape[-1] != self.embed_dim:
            raise ValueError(f"x must be (batch, time, embed_dim={self.embed_dim}); got shape {tuple(x.shape)}")
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k, v = self.kv_proj(x).view(B, T, 2, self.num_kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, Hkv, T, hd)
        y = kernel_attention(q, k, v, attn_mask=attn_mask, is_causal=self.causal,
                             enable_gqa=self.num_kv_heads != self.num_heads,
                             method=self.mapping, alpha=self.alpha)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.dropout(self.out_proj(y))

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
                f"method={self.mapping.name}, learn_alpha={self.learn_alpha}, causal={self.causal}")
