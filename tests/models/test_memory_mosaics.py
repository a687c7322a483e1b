"""Memory Mosaics: every method trains; strict-past memory; agreement with a plain reference."""

import math

import pytest
import torch
from torch.nn import functional as F

from kernelattn.mappings import resolve_mapping
from kernelattn.models import GPT, GPTConfig, MemoryMosaics, MemoryMosaicsConfig
from kernelattn.modules import leaky_average

METHODS = ["softmax", "sparsemax", "entmax15", "entmax43", "normalized_relu", "relumax", "topk_softmax",
           "topk_uniform"]


def _tiny(method, **kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=16, n_layer=2, n_head=4, n_embd=32, block_size=32, method=method, topk=3)
    cfg.update(kw)
    return MemoryMosaics(MemoryMosaicsConfig(**cfg))


def _pattern_batch(n=16, T=24, seed=0):
    """Sequences that repeat a random 4-token motif: learnable from context."""
    g = torch.Generator().manual_seed(seed)
    motif = torch.randint(0, 16, (n, 4), generator=g)
    return motif.repeat(1, T // 4 + 1)[:, :T]


@pytest.mark.parametrize("method", METHODS + ["entmax:1.25"])
def test_each_method_trains_with_falling_loss_and_finite_grads(method):
    model = _tiny(method)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = _pattern_batch()
    losses = []
    for _ in range(12):
        _, loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses


@pytest.mark.parametrize("method", ["softmax", "sparsemax", "entmax43", "normalized_relu", "topk_uniform"])
def test_future_tokens_never_change_past_outputs(method):
    model = _tiny(method).eval()
    x = _pattern_batch(4, 20, seed=1)
    t = 9
    y = x.clone()
    y[:, t + 1:] = torch.randint(0, 16, y[:, t + 1:].shape)
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :t + 1], b[:, :t + 1], atol=1e-5, rtol=0)
    assert (a[:, t + 1:] - b[:, t + 1:]).abs().max() > 1e-4  # and the future does matter downstream


@pytest.mark.parametrize("method", ["softmax", "sparsemax", "entmax15", "normalized_relu", "relumax"])
@pytest.mark.parametrize("bandwidth", [0.8, 2.0])
def test_context_memory_matches_a_plain_strict_past_reference(method, bandwidth):
    """Row t reads values of times j <= t-1 only, with weights mapping(β² cos(k_t, k_j))."""
    torch.manual_seed(0)
    cfg = MemoryMosaicsConfig(vocab_size=8, n_layer=1, n_head=2, n_embd=8, block_size=16, method=method,
                              bandwidth_init=bandwidth)
    cm = MemoryMosaics(cfg).blocks[0].context.double()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    out = cm(x)
    # plain reference
    B, T, C = x.shape
    H, hd = 2, 4
    kraw = cm.keys.proj(x).view(B, T, H, hd).transpose(1, 2)
    lam = cm.keys.log_lambda.exp()
    ks = torch.zeros_like(kraw)
    for t in range(T):
        for j in range(t + 1):
            ks[:, :, t] += torch.exp(-lam[None, :, None] * (t - j)) * kraw[:, :, j]
    beta = cm.keys.beta
    w = cm.v_proj(x).view(B, T, H, hd).transpose(1, 2)
    c = torch.sigmoid(cm.mix_logit)[None, :, None, None]
    nxt = torch.cat([w[:, :, 1:], torch.zeros_like(w[:, :, :1])], 2)
    v = F.normalize((1 - c) * nxt + c * w, dim=-1) * cm.v_scale[None, :, None, None]
    kn = F.normalize(ks, dim=-1)
    mapping = resolve_mapping(method, topk=3)
    ref = torch.zeros(B, H, T, hd, dtype=torch.float64)
    for t in range(1, T):
        s = (beta[None, :, None] ** 2) * torch.einsum("bhd,bhjd->bhj", kn[:, :, t], kn[:, :, :t])
        if method == "normalized_relu":  # Epanechnikov with bandwidth h, β² = 2/h²: relu(β² cos + 1 - β²)
            s = s + 1 - beta[None, :, None] ** 2
        ref[:, :, t] = torch.einsum("bhj,bhjd->bhd", mapping(s, -1), v[:, :, :t])
    ref = cm.out_proj(ref.transpose(1, 2).reshape(B, T, C))
    torch.testing.assert_close(out, ref, atol=1e-9, rtol=0)
    assert (out[:, 0] == 0).all()  # row 0 has no key
    out.pow(2).sum().backward()
    assert cm.keys.log_beta.grad.abs().sum() > 0  # the bandwidth learns under every method


def test_leaky_average_matches_recurrence_and_is_chunk_independent():
    x = torch.randn(2, 3, 150, 5, dtype=torch.float64)
    lam = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64)
    ref = torch.zeros_like(x)
    acc = torch.zeros_like(x[:, :, 0])
    for t in range(150):
        acc = acc * torch.exp(-lam)[None, :, None] + x[:, :, t]
        ref[:, :, t] = acc
    for chunk in (1, 7, 64, 200):
        torch.testing.assert_close(leaky_average(x, lam, chunk), ref, atol=1e-10, rtol=0)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="n_embd"):
        MemoryMosaicsConfig(n_embd=30, n_head=4).validate()
    with pytest.raises(ValueError, match="method"):
        MemoryMosaicsConfig(method="nope").validate()
    with pytest.raises(ValueError, match="block_size"):
        _tiny("softmax")(torch.zeros(1, 40, dtype=torch.long))


def test_returns_logits_or_logits_and_loss_and_tied_head():
    model = _tiny("sparsemax")
    x = torch.randint(0, 16, (2, 10))
    logits = model(x)
    assert logits.shape == (2, 10, 16)
    logits2, loss = model(x, x)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert model.wte.weight.data_ptr() == model.wte.weight.data_ptr()
    with torch.no_grad():
        h = model.ln_f(model.blocks[1](model.blocks[0](model.wte(x))))
    torch.testing.assert_close(logits, h @ model.wte.weight.T / math.sqrt(32))


def test_learnable_alpha_gets_gradient():
    model = _tiny("entmax15", learn_alpha=True)
    x = _pattern_batch(4, 12)
    _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    g = model.blocks[0].context.alpha_param.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("method", ["softmax", "entmax15", "topk_softmax"])
def test_gpt_trains_and_is_causal(method):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, n_layer=2, n_head=4, n_embd=32, block_size=32, method=method, topk=3,
                          n_kv_head=2))
    x = _pattern_batch(8, 24)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        _, loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3
    model.eval()
    y = x.clone()
    y[:, 12:] = 0
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, :12], model(y)[:, :12], atol=1e-5, rtol=0)
