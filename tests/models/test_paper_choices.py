"""The paper code's choices, selectable by name (docs/paper_vs_kernelattn.md).

``normalized_relu_paper`` against a plain float64 reference ``relu(s)/Σ`` with the uniform
fallback; the fallback never reaches future keys; gradients; ``init``/``parametrization``/
dropout switches; config and preset plumbing.
"""

import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from kernelattn.attention import kernel_attention, kernel_attention_step
from kernelattn.mappings import normalized_relu, resolve_mapping
from kernelattn.models import GPTConfig, MemoryMosaics, MemoryMosaicsConfig


def reference_paper_relu(s: torch.Tensor) -> torch.Tensor:
    """Plain float64 ``relu(s)/Σ``; a row with no positive entry: uniform over its unmasked entries."""
    s = s.double()
    visible = ~torch.isneginf(s)
    w = torch.relu(s).masked_fill(~visible, 0.0)
    out = torch.zeros_like(w)
    for idx in itertools.product(*map(range, s.shape[:-1])):
        row, vis = w[idx], visible[idx]
        if row.sum() > 0:
            out[idx] = row / row.sum()
        elif vis.any():
            out[idx] = vis.double() / vis.sum()
    return out


def _causal(L, Lk=None, offset=0):
    return torch.ones(L, Lk or L, dtype=torch.bool).tril(diagonal=offset)


# ---------------------------------------------------------------- the mapping itself

def test_mapping_matches_reference_including_empty_and_masked_rows():
    torch.manual_seed(0)
    s = torch.randn(4, 3, 9, dtype=torch.float64)
    s[0, 0] = -s[0, 0].abs() - 0.1  # every entry negative: empty support
    s[1, 2, 4:] = float("-inf")
    s[1, 2, :4] = -1.0  # empty support, some entries masked: uniform over the 4 visible
    s[2, 1] = float("-inf")  # fully masked: zeros
    m = resolve_mapping("normalized_relu_paper")
    assert (m.kind, m.scale, m.bias, m.empty) == ("normalized_relu", 1.0, 0.0, "uniform")
    got = m(s)
    torch.testing.assert_close(got, reference_paper_relu(s), rtol=0, atol=1e-15)
    torch.testing.assert_close(got[1, 2], torch.tensor([0.25] * 4 + [0.0] * 5, dtype=torch.float64))
    assert got[2, 1].abs().sum() == 0
    # our normalized_relu (same slope and offset) gives zeros on the empty rows instead
    ours = normalized_relu(s, scale=1.0, bias=0.0)
    assert ours[0, 0].abs().sum() == 0 and ours[1, 2].abs().sum() == 0


def test_mapping_float32_and_unknown_fallback():
    s = torch.tensor([[0.5, -1.0, -2.0], [-1.0, -2.0, -3.0]])
    out = resolve_mapping("normalized_relu_paper")(s)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]]))
    with pytest.raises(ValueError, match="empty must be one of"):
        normalized_relu(s, empty="mean")


# ---------------------------------------------------------------- through kernel_attention

def _qkv(B=2, H=3, L=8, D=4, Dv=5, Hkv=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, L, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, Hkv or H, L, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, Hkv or H, L, Dv, generator=g, dtype=torch.float64)
    return q, k, v


@pytest.mark.parametrize("backend", ["auto", "blocked", "sparse"])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_reference(backend, causal):
    q, k, v = _qkv()
    out, support = kernel_attention(q, k, v, is_causal=causal, scale=1.0, method="normalized_relu_paper",
                                    backend=backend, return_support=True, block_size=3)
    s = q @ k.transpose(-1, -2)
    if causal:
        s = s.masked_fill(~_causal(8), float("-inf"))
    torch.testing.assert_close(out, reference_paper_relu(s) @ v, rtol=0, atol=1e-12)
    assert (support == 0).any() or not causal  # the fallback was exercised on some row


def test_empty_causal_row_averages_only_the_keys_it_may_see():
    """Row 2 is opposite to keys 0..4 and aligned with key 5: uniform over 0..2, never 5."""
    D = 3
    k = torch.randn(1, 1, 6, D, dtype=torch.float64)
    q = torch.randn(1, 1, 6, D, dtype=torch.float64)
    k[0, 0, :5] = torch.tensor([1.0, 0.0, 0.0])
    k[0, 0, 5] = torch.tensor([-1.0, 0.0, 0.0])
    q[0, 0, 2] = torch.tensor([-1.0, 0.0, 0.0])
    v = torch.arange(6, dtype=torch.float64).view(1, 1, 6, 1).expand(1, 1, 6, 2).contiguous()
    for backend in ("blocked", "sparse"):
        out = kernel_attention(q, k, v, is_causal=True, scale=1.0, method="normalized_relu_paper", backend=backend)
        torch.testing.assert_close(out[0, 0, 2], torch.tensor([1.0, 1.0], dtype=torch.float64))  # mean(0, 1, 2)
    full = kernel_attention(q, k, v, scale=1.0, method="normalized_relu_paper")
    assert full[0, 0, 2, 0] == 5.0  # without the mask the future key 5 is the only one in support


def test_attention_with_padding_mask_gqa_and_decoding_steps():
    q, k, v = _qkv(H=4, Hkv=2, L=7)
    pad = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    pad[1, ..., :2] = False  # left padding
    out = kernel_attention(q, k, v, attn_mask=pad, is_causal=True, scale=1.0, enable_gqa=True,
                           method="normalized_relu_paper")
    kr, vr = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    s = (q @ kr.transpose(-1, -2)).masked_fill(~(pad & _causal(7)), float("-inf"))
    torch.testing.assert_close(out, reference_paper_relu(s) @ vr, rtol=0, atol=1e-12)
    # stepping token by token over a growing cache reproduces the rows (bottom-right causal)
    for t in range(7):
        step = kernel_attention_step(q[:, :, t:t + 1], k[:, :, :t + 1], v[:, :, :t + 1], attn_mask=pad[..., :t + 1],
                                     scale=1.0, enable_gqa=True, method="normalized_relu_paper")
        torch.testing.assert_close(step[:, :, 0], out[:, :, t], rtol=0, atol=1e-12)


def test_gradcheck_through_attention_with_an_empty_row():
    q, k, v = _qkv(B=1, H=2, L=5, D=3, Dv=2, seed=3)
    q[0, 0, 1] = -k[0, 0, :2].sum(0)  # likely empty: checked below
    s = q @ k.transpose(-1, -2)
    assert (s.abs() > 1e-3).all()  # away from the ReLU kink, where finite differences are exact
    masked = s.masked_fill(~_causal(5), float("-inf"))
    assert (torch.relu(masked).sum(-1) == 0).any()  # an empty row is part of the check
    for backend in ("blocked", "sparse"):
        f = lambda q, k, v: kernel_attention(q, k, v, is_causal=True, scale=1.0,  # noqa: E731
                                             method="normalized_relu_paper", backend=backend)
        assert torch.autograd.gradcheck(f, tuple(x.clone().requires_grad_() for x in (q, k, v)))


# ---------------------------------------------------------------- in Memory Mosaics

def _tiny(method="normalized_relu_paper", **kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=16, n_layer=2, n_head=2, n_embd=8, block_size=32, method=method, topk=3)
    cfg.update(kw)
    return MemoryMosaics(MemoryMosaicsConfig(**cfg))


@pytest.mark.parametrize("parametrization", ["default", "paper"])
def test_context_memory_matches_plain_reference(parametrization):
    """Row t: relu(cos(k_t, k_j))/Σ over j <= t-1, uniform over j <= t-1 when empty; row 0 zero."""
    torch.manual_seed(0)
    cfg = MemoryMosaicsConfig(vocab_size=8, n_layer=1, n_head=4, n_embd=8, block_size=16,
                              method="normalized_relu_paper", parametrization=parametrization)
    cm = MemoryMosaics(cfg).blocks[0].context.double()
    assert cm.keys.beta is None and not any("beta" in n for n, _ in cm.named_parameters())  # fixed bandwidth
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    out = cm(x)
    B, T, C = x.shape
    H, hd = 4, 2
    kraw = cm.keys.proj(x).view(B, T, H, hd).transpose(1, 2)
    lam = cm.keys.lam
    ks = torch.zeros_like(kraw)
    for t in range(T):
        for j in range(t + 1):
            ks[:, :, t] += torch.exp(-lam[None, :, None] * (t - j)) * kraw[:, :, j]
    ku = F.normalize(ks, dim=-1)
    w = cm.v_proj(x).view(B, T, H, hd).transpose(1, 2)
    nxt = torch.cat([w[:, :, 1:], torch.zeros_like(w[:, :, :1])], dim=2)
    c, scale = cm._value_mix_and_scale()
    c = c[None, :, None, None]
    v = F.normalize((1 - c) * nxt + c * w, dim=-1) * scale[None, :, None, None]
    s = (ku @ ku.transpose(-1, -2)).masked_fill(~_causal(T, offset=-1), float("-inf"))  # j <= t-1
    p = reference_paper_relu(s[:, :, 1:])
    assert (torch.relu(s[:, :, 1:]).sum(-1) == 0).any()  # some row used the fallback
    y = torch.cat([torch.zeros_like(v[:, :, :1]), p @ v], dim=2).transpose(1, 2).reshape(B, T, C)
    torch.testing.assert_close(out, cm.out_proj(y), rtol=0, atol=1e-10)


def test_paper_relu_model_is_causal_trains_and_every_parameter_learns():
    model = _tiny(n_head=4, n_embd=32).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 16, (4, 20), generator=g)
    y = x.clone()
    y[:, 10:] = torch.randint(0, 16, (4, 10), generator=g)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, :10], model(y)[:, :10], atol=1e-5, rtol=0)
    model.train()
    motif = torch.randint(0, 16, (16, 4), generator=g).repeat(1, 7)[:, :25]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        _, loss = model(motif[:, :-1], motif[:, 1:])
        opt.zero_grad()
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses


# ---------------------------------------------------------------- init, parametrization, dropout

def test_paper_init_statistics():
    torch.manual_seed(0)
    L, C = 3, 256
    model = MemoryMosaics(MemoryMosaicsConfig(vocab_size=512, n_layer=L, n_head=4, n_embd=C, block_size=8,
                                              init="paper"))
    for name, p in model.named_parameters():
        if name.endswith("out_proj.weight"):
            assert p.std().item() == pytest.approx(1 / math.sqrt(C * L), rel=0.03), name
        elif name.endswith("proj.weight"):
            assert p.std().item() == pytest.approx(1 / math.sqrt(C), rel=0.03), name
    assert model.wte.weight.std().item() == pytest.approx(1.0, rel=0.03)
    default = MemoryMosaics(MemoryMosaicsConfig(vocab_size=512, n_layer=L, n_head=4, n_embd=C, block_size=8))
    assert default.blocks[0].context.v_proj.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert default.wte.weight.std().item() == pytest.approx(C ** -0.5, rel=0.03)


def test_paper_parametrization_initial_values():
    model = _tiny("softmax", parametrization="paper", n_head=4, n_embd=16)
    cm, pm = model.blocks[0].context, model.blocks[0].persistent
    torch.testing.assert_close(cm.keys.beta, torch.full((4,), math.e))
    torch.testing.assert_close(cm.keys.lam, torch.linspace(0.5, 5.0, 4))
    c, scale = cm._value_mix_and_scale()
    assert ((c >= 0) & (c <= 1)).all() and c.requires_grad
    torch.testing.assert_close(scale, torch.full((4,), math.exp(-0.5)))
    assert pm.slot_keys.std().item() == pytest.approx(0.5, rel=0.05)  # N(0, 1/head_dim), head_dim 4
    assert not torch.allclose(pm.slot_keys.norm(dim=-1), torch.ones(1))  # used unnormalised
    # bandwidth_init still overrides the parametrization's default
    other = _tiny("softmax", parametrization="paper", bandwidth_init=1.5)
    torch.testing.assert_close(other.blocks[0].context.keys.beta, torch.full((2,), 1.5))


def test_paper_persistent_memory_matches_plain_reference():
    torch.manual_seed(0)
    model = _tiny("softmax", parametrization="paper", n_layer=1, pmem_size=12).double()
    pm = model.blocks[0].persistent
    with torch.no_grad():
        pm.v_scale_raw.fill_(0.3)  # exp(3) > 5: the paper caps the scale at 5
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    k = pm.keys.unit(x) * pm.keys.beta.square()[None, :, None, None]
    y = torch.softmax(k @ pm.slot_keys.transpose(-1, -2), dim=-1) @ pm.slot_values * 5.0
    torch.testing.assert_close(pm(x), pm.out_proj(y.transpose(1, 2).reshape(2, 7, 8)))


@pytest.mark.parametrize("field", ["dropout", "attn_dropout"])
def test_dropout_only_in_train_mode_and_deterministic_under_seed(field):
    x = torch.randint(0, 16, (2, 12), generator=torch.Generator().manual_seed(0))
    plain = _tiny("sparsemax").eval()
    model = _tiny("sparsemax", **{field: 0.3})  # same seed: same weights
    model.load_state_dict(plain.state_dict())
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(x), plain(x), rtol=0, atol=0)  # eval: no dropout
        model.train()
        torch.manual_seed(5)
        a = model(x)
        b = model(x)
        torch.manual_seed(5)
        a2 = model(x)
    assert (a - b).abs().max() > 1e-4  # train: dropout active, a fresh mask per call
    torch.testing.assert_close(a, a2, rtol=0, atol=0)  # and reproducible under a seed


def test_embd_dropout_separates_embedding_from_residual_dropout():
    model = _tiny("softmax", dropout=0.05, embd_dropout=0.0, attn_dropout=0.05)
    assert model.drop.p == 0.0
    assert model.blocks[0].context.dropout.p == 0.05 and model.blocks[0].persistent.attn_dropout == 0.05
    assert _tiny("softmax", dropout=0.1).drop.p == 0.1  # unset: follows dropout, as before


@pytest.mark.parametrize("field, value, needle", [
    ("init", "xavier", "init must be one of"),
    ("parametrization", "mine", "parametrization must be one of"),
    ("attn_dropout", 1.0, "attn_dropout must be in"),
    ("bandwidth_init", -1.0, "bandwidth_init must be > 0"),
    ("method", "normalized_relu_papr", "unknown method"),
])
def test_bad_fields_are_named(field, value, needle):
    with pytest.raises(ValueError, match=needle):
        MemoryMosaicsConfig(**{field: value}).validate()


# ---------------------------------------------------------------- config and preset plumbing

def test_train_config_builds_the_paper_model(tmp_path):
    from kernelattn.experiments.presets import PRESETS
    from kernelattn.training import ConfigError, Trainer, load_config

    paper = {k: v for k, v in PRESETS["paper"].model.items() if k not in ("n_layer", "n_head", "n_embd", "pmem_size")}
    ov = [f"model.{k}={v}" for k, v in paper.items()] + [
        "model.method=normalized_relu_paper", "model.n_layer=1", "model.n_head=2", "model.n_embd=16",
        "model.block_size=16", "data.seq_len=16", "data.n_stories=30", "optim.batch_size=2", "optim.max_steps=1",
        "run.progress=false", f"run.out_dir={tmp_path}"]
    model = Trainer(load_config(None, ov)).model
    cfg = model.config
    assert (cfg.init, cfg.parametrization, cfg.dropout, cfg.attn_dropout, cfg.embd_dropout) == \
        ("paper", "paper", 0.05, 0.05, 0.0)
    assert model.blocks[0].context.mapping.name == "normalized_relu_paper"
    with pytest.raises(ConfigError, match="model.init"):
        load_config(None, ["model.init=kaiming"])
    with pytest.raises(ConfigError, match="memory_mosaics only"):
        load_config(None, ["model.arch=gpt", "model.parametrization=paper"])
    # a GPT run of the paper preset keeps its dropout and drops the Memory Mosaics-only fields
    gpt = Trainer(load_config(None, [o for o in ov if o.split("=")[0].split(".")[1] not in
                                     ("init", "parametrization", "attn_dropout", "embd_dropout")]
                              + ["model.arch=gpt", f"run.out_dir={tmp_path / 'gpt'}"])).model
    assert isinstance(gpt.config, GPTConfig) and gpt.config.dropout == 0.05
