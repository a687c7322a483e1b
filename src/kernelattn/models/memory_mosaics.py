"""Memory Mosaics (SPEC §3): a transformer-like stack of associative memories.

Attention heads are context memories doing kernel regression over (key, value) pairs
built from the past; the MLP is replaced by a persistent memory of learned slots.
The context memory's probability mapping is the experiment's method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._validation import check_choice, check_probability
from ..attention import kernel_attention
from ..mappings import alpha_from_parameter, alpha_parameter, resolve_mapping
from ..modules.leaky import leaky_average
from .common import LayerNorm, check_common, check_model_inputs

__all__ = ["MemoryMosaicsConfig", "MemoryMosaics", "ContextMemory", "PersistentMemory", "MEMORY_MOSAICS_ONLY"]

#: config fields only Memory Mosaics has (GPTConfig has none of them; runs of a gpt drop them)
MEMORY_MOSAICS_ONLY = ("pmem_size", "init", "parametrization", "attn_dropout", "embd_dropout")
_CHOICES = ("default", "paper")
# The paper code's parameters are stored divided by 10 and mapped back with exp/abs (its
# "exp_param_scale"); exp arguments are capped at 5 (its fp16 guard).
_PAPER_SCALE, _PAPER_CAP = 10.0, 5.0


@dataclass
class MemoryMosaicsConfig:
    """Memory Mosaics hyper-parameters.

    ``method`` is the context memory's mapping (``softmax``, ``sparsemax``,
    ``entmax15``, ``entmax43``, ``normalized_relu``, ``relumax``, ``topk_softmax``,
    ``topk_uniform``, ``normalized_relu_paper``, ``entmax:<α>``, or the kernel aliases);
    ``topk`` is k for the top-k methods; ``pmem_size`` the persistent memory's slot count
    (default ``round(3.5 · n_embd)``, which matches a transformer MLP's parameter count).

    ``normalized_relu_paper`` is the paper code's normalised ReLU: ``relu(cos)/Σ`` on the
    unit keys (Epanechnikov at the fixed bandwidth h = √2, no learnable bandwidth), a row
    with an empty support taking uniform weights over the keys it may see.

    Regularisation: ``dropout`` on each memory's output (the residual branch) and, unless
    ``embd_dropout`` says otherwise, on the embeddings; ``attn_dropout`` on the
    persistent memory's slot-attention weights (the paper's code: 0.05, 0.05, none).

    ``init``: ``"default"`` (Linear N(0, 0.02²), output projections 0.02/√(2L),
    embedding N(0, 1/n_embd)) or ``"paper"`` (Linear N(0, 1/fan_in), output projections
    N(0, 1/(fan_in·L)), embedding N(0, 1)).

    ``parametrization``: ``"default"`` (β = exp(clamp(log β, ±5)), λ = exp(log λ) spread
    geometrically, value mix c = sigmoid(·) ≈ 0.12, linear value scale 1, unit slot keys)
    or ``"paper"`` (β = exp(min(10p, 5)) initialised at e, λ = 10|p| spread linearly, c = p
    ~ U(0, 1) unconstrained, value scale exp(min(10p, 5)) ≈ 0.607; persistent memory with
    unnormalised slot keys ~ N(0, 1/head_dim), keys × β² and a value scale
    min(exp(10p), 5)). ``bandwidth_init`` (β at init) defaults to 2 (default) or e (paper).
    """

    vocab_size: int = 64
    n_layer: int = 2
    n_head: int = 8
    n_embd: int = 128
    block_size: int = 256
    method: str = "softmax"
    topk: int = 8
    pmem_size: int | None = None
    dropout: float = 0.0
    learn_alpha: bool = False
    leaky_min: float = 0.5
    leaky_max: float = 5.0
    bandwidth_init: float | None = None
    init: str = "default"
    parametrization: str = "default"
    attn_dropout: float = 0.0
    embd_dropout: float | None = None

    def validate(self) -> "MemoryMosaicsConfig":
        check_common(self)
        if self.pmem_size is not None and (not isinstance(self.pmem_size, int) or self.pmem_size < 1):
            raise ValueError(f"pmem_size must be a positive integer or null, got {self.pmem_size!r}")
        if not 0 < self.leaky_min <= self.leaky_max:
            raise ValueError(f"leaky_min/leaky_max must satisfy 0 < leaky_min <= leaky_max, got "
                             f"{self.leaky_min}/{self.leaky_max}")
        if self.bandwidth_init is not None and not self.bandwidth_init > 0:
            raise ValueError(f"bandwidth_init must be > 0 or null (the parametrization's default), "
                             f"got {self.bandwidth_init}")
        for name in ("init", "parametrization"):
            check_choice(getattr(self, name), name, _CHOICES)
        check_probability(self.attn_dropout, "attn_dropout")
        if self.embd_dropout is not None:
            check_probability(self.embd_dropout, "embd_dropout", " (or null: the same as dropout)")
        return self

    @property
    def beta0(self) -> float:
        """Initial bandwidth β: ``bandwidth_init``, else 2 (default) or e (paper)."""
        if self.bandwidth_init is not None:
            return float(self.bandwidth_init)
        return math.e if self.parametrization == "paper" else 2.0


def _paper_exp(p: Tensor) -> Tensor:
    """The paper code's positive scalars: ``exp(min(10 p, 5))``."""
    return (p * _PAPER_SCALE).clamp(max=_PAPER_CAP).exp()


class _LeakyKeys(nn.Module):
    """Keys ``β_h · normalise(Σ_j e^{-λ_h (t-j)} W x_j)`` per head.

    ``bandwidth=False`` leaves β out (unit keys): ``normalized_relu_paper`` has a fixed
    bandwidth, and a parameter that never receives a gradient would only confuse
    optimisers and distributed training.
    """

    def __init__(self, cfg: MemoryMosaicsConfig, bandwidth: bool = True):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        self.paper = cfg.parametrization == "paper"
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        if self.paper:
            # λ = 10|p|, spread linearly over heads as in the paper's code
            self.lambda_raw = nn.Parameter(torch.linspace(cfg.leaky_min, cfg.leaky_max, cfg.n_head) / _PAPER_SCALE)
        else:
            # decay rates spread geometrically over heads: short and long memories side by side
            lam = torch.logspace(math.log10(cfg.leaky_min), math.log10(cfg.leaky_max), cfg.n_head)
            self.log_lambda = nn.Parameter(lam.log())
        self.has_bandwidth = bandwidth
        if bandwidth and self.paper:
            self.beta_raw = nn.Parameter(torch.full((cfg.n_head,), math.log(cfg.beta0) / _PAPER_SCALE))
        elif bandwidth:
            self.log_beta = nn.Parameter(torch.full((cfg.n_head,), math.log(cfg.beta0)))

    @property
    def lam(self) -> Tensor:
        """Decay rates λ, ``(H,)``."""
        return self.lambda_raw.abs() * _PAPER_SCALE if self.paper else self.log_lambda.exp()

    @property
    def beta(self) -> Tensor | None:
        """Bandwidths β (1/h), ``(H,)``; ``None`` for unit keys."""
        if not self.has_bandwidth:
            return None
        return _paper_exp(self.beta_raw) if self.paper else self.log_beta.clamp(-5.0, 5.0).exp()

    def unit(self, x: Tensor) -> Tensor:
        """Unit keys ``(B, H, T, hd)`` from ``x`` ``(B, T, C)``."""
        B, T, C = x.shape
        k = self.proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        return F.normalize(leaky_average(k, self.lam), dim=-1, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        k = self.unit(x)
        return k if self.beta is None else k * self.beta.view(1, -1, 1, 1)


class ContextMemory(nn.Module):
    """Kernel regression over the past: query at t reads values at j <= t-1.

    Scores are ``β_h² cos(k_t, k_j)`` (for normalised ReLUⁿ the fixed-bandwidth kernel
    ``relu(β_h² cos + 1 - β_h²)^n``, so β_h is the learnable 1/bandwidth of every method;
    for ``normalized_relu_paper`` plain ``relu(cos)``, h = √2 fixed); values look one step
    ahead, ``v_t = s_h · normalise((1 - c_h) W_v x_{t+1} + c_h W_v x_t)``, so the value at
    ``j <= t-1`` uses inputs up to ``t``. Row 0 has no key and outputs zero.

    Shapes: ``forward(x)``: ``(B, T, C) -> (B, T, C)``.
    """

    def __init__(self, cfg: MemoryMosaicsConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        self.mapping = resolve_mapping(cfg.method, topk=cfg.topk)
        # the paper's normalised ReLU reads unit keys: its bandwidth is fixed
        self.fixed_paper_relu = self.mapping.kind == "normalized_relu" and self.mapping.empty == "uniform"
        self.keys = _LeakyKeys(cfg, bandwidth=not self.fixed_paper_relu)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.paper = cfg.parametrization == "paper"
        if self.paper:
            self.mix = nn.Parameter(torch.rand(cfg.n_head))  # c_h itself, ~U(0, 1), unconstrained
            self.v_scale_raw = nn.Parameter(torch.full((cfg.n_head,), -0.5 / _PAPER_SCALE))  # exp(-0.5) ≈ 0.607
        else:
            self.mix_logit = nn.Parameter(torch.full((cfg.n_head,), -2.0))  # c_h = sigmoid(.) ≈ 0.12
            self.v_scale = nn.Parameter(torch.ones(cfg.n_head))
        self.out_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.learn_alpha = cfg.learn_alpha
        if cfg.learn_alpha:
            a0 = self.mapping.alpha if self.mapping.kind == "entmax" and self.mapping.alpha > 1 else 1.5
            self.alpha_param = alpha_parameter(a0, (cfg.n_head,))

    @property
    def alpha(self) -> Tensor | None:
        return alpha_from_parameter(self.alpha_param) if self.learn_alpha else None

    def _value_mix_and_scale(self) -> tuple[Tensor, Tensor]:
        """``(c_h, s_h)``, each ``(H,)``."""
        if self.paper:
            return self.mix, _paper_exp(self.v_scale_raw)
        return torch.sigmoid(self.mix_logit), self.v_scale

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        k = self.keys(x)  # (B, H, T, hd)
        w = self.v_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        nxt = torch.cat([w[:, :, 1:], torch.zeros_like(w[:, :, :1])], dim=2)  # W_v x_{t+1}
        c, scale = self._value_mix_and_scale()
        c = c.view(1, -1, 1, 1)
        v = F.normalize((1 - c) * nxt + c * w, dim=-1, eps=1e-6) * scale.view(1, -1, 1, 1)
        q, mapping = k, self.mapping
        if mapping.kind == "normalized_relu" and not self.fixed_paper_relu:
            # Fixed-bandwidth n-weight kernel on unit keys (SPEC §1): relu(a·cos + 1 - a)^n
            # with a = 2/h² = β². One extra coordinate (-β on queries, +β on keys) adds
            # -β² to every score, so the bandwidth stays learnable through β (a plain
            # relu(β² cos) would be invariant to β after normalisation).
            beta = self.keys.beta.view(1, -1, 1, 1).expand(B, -1, T, 1)
            q, k = torch.cat([k, -beta], dim=-1), torch.cat([k, beta], dim=-1)
            mapping = mapping.with_options(scale=1.0, bias=1.0)
        if T == 1:
            y = torch.zeros_like(v)
        else:
            # Strict past: queries 1..T-1 against keys 0..T-2 with an ordinary causal mask
            # is exactly "query t sees j <= t-1", with no (T x T) mask. The paper variant's
            # uniform fallback therefore also averages the values at j <= t-1 only.
            y = kernel_attention(q[:, :, 1:], k[:, :, :-1], v[:, :, :-1], is_causal=True, scale=1.0,
                                 method=mapping, alpha=self.alpha)  # (B, H, T-1, hd)
            y = torch.cat([torch.zeros_like(y[:, :, :1]), y], dim=2)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.dropout(self.out_proj(y))


class PersistentMemory(nn.Module):
    """Replaces the MLP: leaky keys scored against P learned key slots, softmax, P value slots.

    Default: unit slot keys, scores ``β_h cos``-scaled as the context keys. Paper
    parametrization: unnormalised slot keys, query keys ``β_h² · unit``, and a learnable
    value scale, as in the paper's code. ``attn_dropout`` drops slot-attention weights in
    training. Shapes: ``forward(x)``: ``(B, T, C) -> (B, T, C)``.
    """

    def __init__(self, cfg: MemoryMosaicsConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        P = cfg.pmem_size or round(3.5 * cfg.n_embd)
        self.paper = cfg.parametrization == "paper"
        self.keys = _LeakyKeys(cfg)
        hd = self.head_dim
        # default: slot keys are normalised in forward, so their init scale is irrelevant
        key_std = hd ** -0.5 if self.paper else 1.0
        self.slot_keys = nn.Parameter(torch.randn(cfg.n_head, P, hd) * key_std)
        self.slot_values = nn.Parameter(torch.randn(cfg.n_head, P, hd) / math.sqrt(hd))
        if self.paper:
            self.v_scale_raw = nn.Parameter(torch.full((cfg.n_head,), -0.5 / _PAPER_SCALE))
        self.out_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.attn_dropout = cfg.attn_dropout
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        if self.paper:
            k = self.keys.unit(x) * self.keys.beta.square().view(1, -1, 1, 1)  # (B, H, T, hd)
            sk = self.slot_keys
        else:
            k = self.keys(x)  # (B, H, T, hd)
            sk = F.normalize(self.slot_keys, dim=-1)
        sk = sk.unsqueeze(0).expand(B, -1, -1, -1)  # (B, H, P, hd)
        sv = self.slot_values.unsqueeze(0).expand(B, -1, -1, -1)
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(k, sk, sv, scale=1.0, dropout_p=p)  # (B, H, T, hd)
        if self.paper:
            # the paper caps the scale itself (min(exp(10p), 5)), not its exponent
            y = y * (self.v_scale_raw * _PAPER_SCALE).exp().clamp(max=_PAPER_CAP).view(1, -1, 1, 1)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.dropout(self.out_proj(y))


class Block(nn.Module):
    def __init__(self, cfg: MemoryMosaicsConfig):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd)
        self.context = ContextMemory(cfg)
        self.ln_2 = LayerNorm(cfg.n_embd)
        self.persistent = PersistentMemory(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.context(self.ln_1(x))
        return x + self.persistent(self.ln_2(x))


class MemoryMosaics(nn.Module):
    """Memory Mosaics language model.

    ``model(idx)`` with ``idx`` ``(B, T)`` token ids returns logits ``(B, T, vocab)``;
    ``model(idx, targets)`` returns ``(logits, loss)`` (targets ``-100`` are ignored).
    No positional embedding: order enters through the leaky key averages and the
    one-step-ahead values. The output head is tied to the embedding and scaled by
    ``1/sqrt(n_embd)``.
    """

    def __init__(self, cfg: MemoryMosaicsConfig):
        super().__init__()
        self.config = cfg.validate()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = LayerNorm(cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout if cfg.embd_dropout is None else cfg.embd_dropout)
        self._init_parameters(cfg)

    def _init_parameters(self, cfg: MemoryMosaicsConfig) -> None:
        if cfg.init == "paper":
            # N(0, 1/fan_in) everywhere, output projections also / sqrt(L); embedding N(0, 1)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, mean=0.0, std=m.weight.shape[1] ** -0.5)
            nn.init.normal_(self.wte.weight, mean=0.0, std=1.0)
            for name, p in self.named_parameters():
                if name.endswith("out_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=(p.shape[1] * cfg.n_layer) ** -0.5)
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
        # Tied head scaled by 1/sqrt(C): an embedding std of 1/sqrt(C) makes each token's
        # logit for itself ~1 at init, so the initial loss is ~log(vocab) at any width.
        nn.init.normal_(self.wte.weight, mean=0.0, std=cfg.n_embd ** -0.5)
        for name, p in self.named_parameters():
            if name.endswith("out_proj.weight"):  # GPT-2 style scaled residual init
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: Tensor, targets: Tensor | None = None):
        check_model_inputs(idx, targets, self.config.vocab_size)
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size={self.config.block_size}")
        x = self.drop(self.wte(idx))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        logits = x @ self.wte.weight.T / math.sqrt(self.config.n_embd)  # (B, T, vocab)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100)
        return logits, loss
