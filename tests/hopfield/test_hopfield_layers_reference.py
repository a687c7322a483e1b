"""Our Hopfield layers against a plain float64 re-statement of hopfield-layers' core.

``reference_core`` below restates, step by step and without this package, what
``hflayers.functional.hopfield_core_forward`` computes (sequence-first tensors, packed
``in_proj_weight``, static patterns repeated over heads, Hopfield-space LayerNorm, per-head
iteration stopped by ``update_steps_max`` / ``update_steps_eps`` on the association
matrix, bool masks = blocked, float masks added). Three points follow hopfield-layers'
*documented* meaning where its code differs (see docs/porting_from_hopfield_layers.md):
a per-head ``scaling`` multiplies each head's states, ``concat_bias_pattern`` appends
the learned bias pattern, and a static pattern is repeated over the heads of its own
batch entry (hopfield-layers' repeat mixes batch entries when batch > 1 and heads > 1).
Weights are drawn as a hopfield-layers ``state_dict``
and loaded with :func:`load_hopfield_layers_state_dict`.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import kernelattn.hopfield as hf

entmax_pkg = pytest.importorskip("entmax")

B, L, S = 3, 4, 6


def reference_core(sd, cfg, stored, state, proj, pad=None, amask=None, mapping=None):
    """hopfield-layers' Hopfield forward on (n, B, E) inputs; returns (out (L, B, O), xi (B, H, L, S'), v)."""
    mapping = mapping or (lambda s: torch.softmax(s, dim=-1))
    h = cfg["num_heads"]
    # 1. input LayerNorms
    for key, name in (("stored", "norm_stored_pattern"), ("state", "norm_state_pattern"),
                      ("proj", "norm_pattern_projection")):
        if cfg.get(f"norm_{key}", True):
            x = {"stored": stored, "state": state, "proj": proj}[key]
            x = F.layer_norm(x, x.shape[-1:], sd.get(name + ".weight"), sd.get(name + ".bias"),
                             cfg.get(f"eps_{key}", 1e-5))
            stored, state, proj = (x if key == "stored" else stored, x if key == "state" else state,
                                   x if key == "proj" else proj)
    hd = cfg.get("hidden_size") or (cfg["input_size"] // h if cfg.get("input_size") else state.shape[-1])
    pd = cfg.get("pattern_size") or hd
    qs, ks, vs = cfg.get("q_static", False), cfg.get("k_static", False), cfg.get("v_static", False)
    # 2. projections: packed rows [q?, k?, v?]; bias [q?, k?, v (always)]
    if "association_core.in_proj_weight" in sd:
        w = sd["association_core.in_proj_weight"]
        ws, start = {}, 0
        for name, static, rows in (("q", qs, h * hd), ("k", ks, h * hd), ("v", vs, h * pd)):
            if not static:
                ws[name] = w[start:start + rows]
                start += rows
    else:
        ws = {n: sd[f"association_core.{n}_proj_weight"] for n in "qkv" if f"association_core.{n}_proj_weight" in sd}
    bs, start = {}, 0
    bias = sd.get("association_core.in_proj_bias")
    for name, static, rows in (("q", qs, h * hd), ("k", ks, h * hd), ("v", False, h * pd)):
        if not static:
            bs[name] = None if bias is None else bias[start:start + rows]
            start += rows
    q = state.repeat(1, 1, h) if qs else F.linear(state, ws["q"], bs["q"])
    k = stored.repeat(1, 1, h) if ks else F.linear(stored, ws["k"], bs["k"])
    v = proj
    if cfg.get("connected", False):
        v = F.linear(v, ws["k"], bs["k"])
        if not vs:
            v = F.linear(v, ws["v"], bs["v"])
    else:
        v = v.repeat(1, 1, h) if vs else F.linear(v, ws["v"], bs["v"])
    # 3. Hopfield-space LayerNorm per head
    if cfg.get("hopfield_norm", False):
        def pn(t):
            return F.layer_norm(t.reshape(-1, hd), (hd,), sd.get("association_core.p_norm_weight"),
                                sd.get("association_core.p_norm_bias"), cfg.get("eps_hopfield", 1e-5)).reshape(t.shape)
        q, k = pn(q), pn(k)
    # 4. scaling (per head: each head's block of hd features)
    beta = cfg["beta"]
    scale_q = (lambda t: t * beta) if not isinstance(beta, torch.Tensor) else (
        lambda t: t * beta.repeat_interleave(t.shape[-1] // h))
    q = scale_q(q)
    if amask is not None and amask.dim() == 2:
        amask = amask.unsqueeze(0)
    # 5. learned bias pattern
    if "association_core.bias_k" in sd:
        k = torch.cat([k, sd["association_core.bias_k"].repeat(1, k.shape[1], 1)])
        v = torch.cat([v, sd["association_core.bias_v"].repeat(1, v.shape[1], 1)])
        amask = None if amask is None else F.pad(amask, [0, 1])
        pad = None if pad is None else F.pad(pad, [0, 1])
    # 6. heads: (B*H, n, size)
    tgt, bsz = q.shape[0], q.shape[1]
    q = q.contiguous().view(tgt, bsz * h, hd).transpose(0, 1)
    k = k.contiguous().view(k.shape[0], bsz * h, hd).transpose(0, 1)
    v = v.contiguous().view(v.shape[0], bsz * h, -1).transpose(0, 1)
    # 7. zero pattern
    if cfg.get("zero", False):
        k = torch.cat([k, torch.zeros(k.shape[0], 1, hd, dtype=k.dtype)], dim=1)
        v = torch.cat([v, torch.zeros(v.shape[0], 1, v.shape[2], dtype=v.dtype)], dim=1)
        amask = None if amask is None else F.pad(amask, [0, 1])
        pad = None if pad is None else F.pad(pad, [0, 1])
    src = k.shape[1]
    steps = cfg.get("steps", 0)
    steps = (torch.full((h,), -1) if steps is None else
             steps if isinstance(steps, torch.Tensor) else torch.full((h,), steps))
    eps = cfg.get("eps", 1e-4)
    eps = eps if isinstance(eps, torch.Tensor) else torch.full((h,), eps, dtype=torch.float64)
    # 8. iteration
    active = torch.ones(bsz * h, 1, 1, dtype=torch.bool)
    step, xi, xi_old = 0, None, None
    while active.any():
        if step > 0:
            q = torch.where(active, scale_q_heads(torch.bmm(xi, k), beta, h, bsz), q)
        s = torch.bmm(q, k.transpose(1, 2))
        if amask is not None:
            s = s.masked_fill(amask, -math.inf) if amask.dtype == torch.bool else s + amask
        if pad is not None:
            s = s.view(bsz, h, tgt, src).masked_fill(pad[:, None, None, :], -math.inf).view(bsz * h, tgt, src)
        new = mapping(s)
        xi = new if xi is None else torch.where(active, new, xi)
        xa = xi.view(bsz, h, tgt, src)
        act = (step < steps) | (steps < 0)
        if xi_old is not None:
            act &= (xi_old - xa).norm(p=2, dim=(2, 3)).max(dim=0)[0] > eps
        active = act[None, :, None, None].repeat(bsz, 1, 1, 1).view(bsz * h, 1, 1)
        xi_old = xa
        step += 1
    out = torch.bmm(xi, v).transpose(0, 1).contiguous().view(tgt, bsz, -1)
    if "association_core.out_proj.weight" in sd:
        out = F.linear(out, sd["association_core.out_proj.weight"], sd.get("association_core.out_proj.bias"))
    if cfg.get("activation"):
        out = getattr(torch, cfg["activation"])(out)
    return out, xi.view(bsz, h, tgt, src), v.view(bsz, h, src, -1)


def scale_q_heads(t, beta, h, bsz):
    """Scale updated states (B*H, L, hd) by their head's β."""
    if not isinstance(beta, torch.Tensor):
        return t * beta
    return t * beta.repeat(bsz)[:, None, None]


def hl_state_dict(cfg, gen):
    """Random weights with hopfield-layers' names and shapes for a config."""
    h, e = cfg["num_heads"], cfg["input_size"]
    hd = cfg.get("hidden_size") or e // h
    pd = cfg.get("pattern_size") or hd
    es, ep = cfg.get("stored_size") or e, cfg.get("proj_size") or e
    qs, ks, vs = cfg.get("q_static", False), cfg.get("k_static", False), cfg.get("v_static", False)

    def r(*shape, scale=0.4):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale

    sd = {}
    packed = es == e and ep == e and cfg.get("pattern_size") is None and not cfg.get("connected", False)
    if packed:
        rows = (not qs) * h * hd + (not ks) * h * hd + (not vs) * h * pd
        if rows:
            sd["association_core.in_proj_weight"] = r(rows, e)
    else:
        if not qs:
            sd["association_core.q_proj_weight"] = r(h * hd, e)
        if not ks:
            sd["association_core.k_proj_weight"] = r(h * hd, es)
        if not vs:
            sd["association_core.v_proj_weight"] = r(h * pd, h * hd if cfg.get("connected") else ep)
    if cfg.get("bias", True) and not (qs and ks and vs):
        sd["association_core.in_proj_bias"] = r((not qs) * h * hd + (not ks) * h * hd + h * pd)
    if cfg.get("hopfield_norm_affine"):
        sd["association_core.p_norm_weight"] = 1 + r(hd, scale=0.2)
        sd["association_core.p_norm_bias"] = r(hd, scale=0.2)
    if cfg.get("concat_bias"):
        sd["association_core.bias_k"] = r(1, 1, h * hd)
        sd["association_core.bias_v"] = r(1, 1, h * pd)
    if not cfg.get("disable_out", False):
        sd["association_core.out_proj.weight"] = r(cfg.get("output_size") or e, h * pd)
        if cfg.get("bias", True):
            sd["association_core.out_proj.bias"] = r(cfg.get("output_size") or e)
    for key, name, size in (("stored", "norm_stored_pattern", es), ("state", "norm_state_pattern", e),
                            ("proj", "norm_pattern_projection", ep)):
        if cfg.get(f"norm_{key}", True) and cfg.get("affine", True):
            sd[name + ".weight"] = 1 + r(size, scale=0.2)
            sd[name + ".bias"] = r(size, scale=0.2)
    return sd


def build(cfg, **extra):
    """Our layer for a config (float64), with the hopfield-layers argument names."""
    kw = dict(input_size=cfg.get("input_size"), hidden_size=cfg.get("hidden_size"),
              output_size=cfg.get("output_size"), pattern_size=cfg.get("pattern_size"),
              num_heads=cfg["num_heads"], scaling=cfg.get("scaling", cfg["beta"]),
              update_steps_max=cfg.get("steps", 0), update_steps_eps=cfg.get("eps", 1e-4),
              stored_pattern_size=cfg.get("stored_size"), pattern_projection_size=cfg.get("proj_size"),
              stored_pattern_as_static=cfg.get("k_static", False), state_pattern_as_static=cfg.get("q_static", False),
              pattern_projection_as_static=cfg.get("v_static", False),
              pattern_projection_as_connected=cfg.get("connected", False),
              normalize_hopfield_space=cfg.get("hopfield_norm", False),
              normalize_hopfield_space_affine=cfg.get("hopfield_norm_affine", False),
              normalize_hopfield_space_eps=cfg.get("eps_hopfield", 1e-5),
              association_activation=cfg.get("activation"), input_bias=cfg.get("bias", True),
              concat_bias_pattern=cfg.get("concat_bias", False), add_zero_association=cfg.get("zero", False),
              disable_out_projection=cfg.get("disable_out", False), batch_first=cfg.get("batch_first", True))
    for key in ("stored", "state", "proj"):
        name = {"stored": "stored_pattern", "state": "state_pattern", "proj": "pattern_projection"}[key]
        kw[f"normalize_{name}"] = cfg.get(f"norm_{key}", True)
        kw[f"normalize_{name}_affine"] = cfg.get("affine", True)
        kw[f"normalize_{name}_eps"] = cfg.get(f"eps_{key}", 1e-5)
    kw.update(extra)
    return hf.Hopfield(**kw).double()


BASE = dict(num_heads=2, input_size=8, beta=0.7)
CONFIGS = {
    "default": dict(BASE),
    "default_beta": dict(BASE, beta=1 / math.sqrt(4), scaling=None),
    "cross_sizes": dict(BASE, hidden_size=3, pattern_size=5, output_size=7, stored_size=6, proj_size=9),
    "per_head_scaling": dict(BASE, beta=torch.tensor([0.3, 1.9], dtype=torch.float64)),
    "update_steps": dict(BASE, beta=2.0, steps=3, eps=1e-12),
    "update_steps_eps": dict(BASE, beta=3.0, steps=50, eps=1e-3),
    "update_until_eps": dict(BASE, beta=3.0, steps=None, eps=1e-6),
    "update_steps_per_head": dict(BASE, beta=2.0, steps=torch.tensor([0, 4]), eps=1e-9),
    "hopfield_space_norm": dict(BASE, hopfield_norm=True, eps_hopfield=1e-3),
    "hopfield_space_norm_affine": dict(BASE, hopfield_norm=True, hopfield_norm_affine=True),
    "norm_eps": dict(BASE, eps_stored=1e-2, eps_state=1e-1, eps_proj=0.5),
    "no_input_norm": dict(BASE, norm_stored=False, norm_state=False, norm_proj=False),
    "no_affine": dict(BASE, affine=False),
    "zero_association": dict(BASE, zero=True),
    "concat_bias_pattern": dict(BASE, concat_bias=True),
    "connected": dict(BASE, connected=True, stored_size=6, proj_size=6),
    "connected_static_projection": dict(BASE, connected=True, v_static=True),
    "state_static_repeated": dict(BASE, hidden_size=4, q_static=True, state_size=4),
    "stored_and_projection_static": dict(BASE, hidden_size=4, k_static=True, v_static=True, stored_size=4,
                                         proj_size=4),
    "activation": dict(BASE, activation="tanh"),
    "disable_out": dict(BASE, disable_out=True),
    "no_bias": dict(BASE, bias=False),
    "batch_first_false": dict(BASE, batch_first=False),
    "one_head": dict(BASE, num_heads=1, hidden_size=5),
}


def _inputs(cfg, gen):
    e = cfg["input_size"]
    es, ep = cfg.get("stored_size") or e, cfg.get("proj_size") or e
    state_size = cfg.get("state_size") or e

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return r(S, B, es), r(L, B, state_size), r(S, B, ep)  # sequence first, as the reference


def _run_ours(layer, cfg, stored, state, proj, **kw):
    bf = cfg.get("batch_first", True)
    data = tuple(t.transpose(0, 1) if bf else t for t in (stored, state, proj))
    out, w = layer(data, return_weights=True, **kw)
    return (out.transpose(0, 1) if bf else out), w, layer.get_projected_pattern_matrix(data, **kw)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_reference(name):
    cfg = CONFIGS[name]
    gen = torch.Generator().manual_seed(sorted(CONFIGS).index(name))
    if cfg.get("q_static"):
        cfg = dict(cfg, norm_state=False)  # a static state of hidden_size: no LayerNorm of input_size
    if cfg.get("k_static"):
        cfg = dict(cfg, norm_stored=False, norm_proj=False)
    sd = hl_state_dict(cfg, gen)
    layer = build(cfg)
    hf.load_hopfield_layers_state_dict(layer, sd)
    stored, state, proj = _inputs(cfg, gen)
    if cfg.get("q_static"):
        state = state[..., :cfg["hidden_size"]]
    out, w, v = _run_ours(layer, cfg, stored, state, proj)
    ref, ref_w, ref_v = reference_core(sd, cfg, stored, state, proj)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(w, ref_w, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(v, ref_v, atol=1e-12, rtol=1e-10)
    data = (stored.transpose(0, 1), state.transpose(0, 1), proj.transpose(0, 1))
    if cfg.get("batch_first", True):
        torch.testing.assert_close(layer.get_association_matrix(data), ref_w, atol=1e-12, rtol=1e-10)


def test_update_steps_eps_stops_early():
    """update_steps_max=None really iterates (the weights differ from one step) and stops."""
    cfg = CONFIGS["update_until_eps"]
    gen = torch.Generator().manual_seed(5)
    sd = hl_state_dict(cfg, gen)
    stored, state, proj = _inputs(cfg, gen)
    _, w_inf, _ = reference_core(sd, cfg, stored, state, proj)
    _, w_one, _ = reference_core(sd, dict(cfg, steps=0), stored, state, proj)
    assert (w_inf - w_one).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["bool2d", "float2d", "bool3d", "float3d_inf", "padding", "padding_and_mask"])
def test_masks_match_reference(kind):
    cfg = dict(BASE, steps=2, eps=1e-12, beta=1.5)
    gen = torch.Generator().manual_seed(11)
    sd = hl_state_dict(cfg, gen)
    layer = build(cfg)
    hf.load_hopfield_layers_state_dict(layer, sd)
    stored, state, proj = _inputs(cfg, gen)
    h = cfg["num_heads"]
    causal = torch.triu(torch.ones(L, S, dtype=torch.bool), diagonal=1)
    amask = pad = None
    if kind == "bool2d":
        amask = causal
    elif kind == "float2d":
        amask = torch.randn(L, S, generator=gen, dtype=torch.float64)
    elif kind == "bool3d":
        amask = torch.rand(B * h, L, S, generator=gen) < 0.4
        amask[..., 0] = False  # every state keeps one pattern (hopfield-layers' softmax gives NaN otherwise)
    elif kind == "float3d_inf":
        amask = torch.randn(B * h, L, S, generator=gen, dtype=torch.float64)
        amask[:, :, 2] = -math.inf
    if kind.startswith("padding"):
        pad = torch.zeros(B, S, dtype=torch.bool)
        pad[0, 4:] = True
        pad[2, 1] = True
        if kind == "padding_and_mask":
            amask = causal
    out, w, _ = _run_ours(layer, cfg, stored, state, proj, stored_pattern_padding_mask=pad, association_mask=amask)
    ref, ref_w, _ = reference_core(sd, cfg, stored, state, proj, pad=pad, amask=amask)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(w, ref_w, atol=1e-12, rtol=1e-10)
    if kind == "float2d":
        assert (w > 0).all()  # an additive mask shifts scores, it does not block them


@pytest.mark.parametrize("mapping,fn", [("sparsemax", lambda s: entmax_pkg.sparsemax(s, dim=-1)),
                                        ("entmax15", lambda s: entmax_pkg.entmax15(s, dim=-1))])
def test_sparse_mappings_swap_into_the_reference(mapping, fn):
    """HFYN's layers: hopfield-layers' core with the softmax replaced."""
    cfg = dict(BASE, beta=2.0, steps=3, eps=1e-12, zero=True)
    gen = torch.Generator().manual_seed(13)
    sd = hl_state_dict(cfg, gen)
    layer = build(cfg, mapping=mapping)
    hf.load_hopfield_layers_state_dict(layer, sd)
    stored, state, proj = _inputs(cfg, gen)
    out, w, _ = _run_ours(layer, cfg, stored, state, proj)
    ref, ref_w, _ = reference_core(sd, cfg, stored, state, proj, mapping=fn)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-8)
    assert (w == 0).any()


def test_static_only_mode_infers_sizes_and_uses_beta_one():
    """All static, no projections: input_size may be None, β defaults to 1 (hopfield-layers)."""
    layer = hf.Hopfield(scaling=None, update_steps_max=2, update_steps_eps=1e-12, stored_pattern_as_static=True,
                        state_pattern_as_static=True, pattern_projection_as_static=True,
                        normalize_stored_pattern=False, normalize_state_pattern=False,
                        normalize_pattern_projection=False, disable_out_projection=True).double()
    assert layer.scaling == 1.0 and not list(layer.parameters())
    g = torch.Generator().manual_seed(3)
    y = torch.randn(B, S, 5, generator=g, dtype=torch.float64)
    r = torch.randn(B, L, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(layer((y, r, y)), hf.hopfield_retrieve(y, r, "softmax", beta=1.0, n_iter=3, tol=0.0))
    cfg = dict(num_heads=1, input_size=5, beta=1.0, steps=2, eps=1e-12, q_static=True, k_static=True,
               v_static=True, disable_out=True, norm_stored=False, norm_state=False, norm_proj=False)
    ref, _, _ = reference_core({}, cfg, y.transpose(0, 1), r.transpose(0, 1), y.transpose(0, 1))
    torch.testing.assert_close(layer((y, r, y)), ref.transpose(0, 1))


def test_static_input_of_all_heads_is_split_not_repeated():
    """A static input of num_heads * hidden_size is split into heads (ours); hidden_size is repeated."""
    layer = hf.Hopfield(input_size=8, hidden_size=4, num_heads=2, state_pattern_as_static=True,
                        normalize_state_pattern=False).double()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(B, S, 8, generator=g, dtype=torch.float64)
    state = torch.randn(B, L, 4, generator=g, dtype=torch.float64)
    w_rep = layer.get_association_matrix((x, state, x))
    w_split = layer.get_association_matrix((x, torch.cat([state, state], -1), x))
    torch.testing.assert_close(w_rep, w_split)


def test_pooling_and_lookup_match_reference():
    cfg = dict(BASE, beta=1.2)
    gen = torch.Generator().manual_seed(21)
    sd = hl_state_dict(cfg, gen)
    quantity = 3
    pool_sd = {"hopfield." + k: v for k, v in sd.items()}
    pool_sd["pooling_weights"] = torch.randn(1, quantity, 8, generator=gen, dtype=torch.float64)
    pool = hf.HopfieldPooling(8, num_heads=2, scaling=1.2, quantity=quantity).double()
    hf.load_hopfield_layers_state_dict(pool, pool_sd)
    stored, _, proj = _inputs(cfg, gen)
    pad = torch.zeros(B, S, dtype=torch.bool)
    pad[1, 3:] = True
    out = pool((stored.transpose(0, 1), proj.transpose(0, 1)), stored_pattern_padding_mask=pad)
    state = pool_sd["pooling_weights"].transpose(0, 1).expand(quantity, B, 8)
    ref, ref_w, _ = reference_core(sd, cfg, stored, state, proj, pad=pad)
    torch.testing.assert_close(out, ref.transpose(0, 1).flatten(1))
    torch.testing.assert_close(pool.get_association_matrix((stored.transpose(0, 1), proj.transpose(0, 1)),
                                                           stored_pattern_padding_mask=pad), ref_w)
    # HopfieldLayer: learned stored patterns (and separate targets) answer the input
    look_sd = {"hopfield." + k: v for k, v in sd.items()}
    look_sd["lookup_weights"] = torch.randn(1, 5, 8, generator=gen, dtype=torch.float64)
    look_sd["target_weights"] = torch.randn(1, 5, 8, generator=gen, dtype=torch.float64)
    look = hf.HopfieldLayer(8, num_heads=2, scaling=1.2, quantity=5, lookup_weights_as_separated=True).double()
    hf.load_hopfield_layers_state_dict(look, look_sd)
    x = torch.randn(L, B, 8, generator=gen, dtype=torch.float64)
    lpad = torch.zeros(B, 5, dtype=torch.bool)
    lpad[0, 0] = True
    out = look(x.transpose(0, 1), stored_pattern_padding_mask=lpad)
    ref, _, _ = reference_core(sd, cfg, look_sd["lookup_weights"].transpose(0, 1).expand(5, B, 8), x,
                               look_sd["target_weights"].transpose(0, 1).expand(5, B, 8), pad=lpad)
    torch.testing.assert_close(out, ref.transpose(0, 1))


def test_encoder_and_decoder_layers():
    torch.manual_seed(0)
    hop = hf.Hopfield(input_size=8, num_heads=2, mapping="sparsemax")
    enc = hf.HopfieldEncoderLayer(hop, dim_feedforward=16, dropout=0.0).double().eval()
    x = torch.randn(B, L, 8, dtype=torch.float64)
    pad = torch.zeros(B, L, dtype=torch.bool)
    pad[0, -1] = True
    causal = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    y = enc(x, src_mask=causal, src_key_padding_mask=pad)
    a = enc.hopfield_association(x, stored_pattern_padding_mask=pad, association_mask=causal)
    h = enc.norm_residual(x + a)
    ref = enc.norm_output(h + enc.linear_output(torch.relu(enc.linear_residual(h))))
    torch.testing.assert_close(y, ref)
    assert enc.hopfield_association is not hop  # copied, as in hopfield-layers
    cross = hf.Hopfield(input_size=8, num_heads=2, stored_pattern_size=6, pattern_projection_size=6)
    dec = hf.HopfieldDecoderLayer(hop, cross, dim_feedforward=16, dropout=0.0).double().eval()
    mem = torch.randn(B, S, 6, dtype=torch.float64)
    y = dec(x, mem, tgt_mask=causal)
    t = dec.norm_residual_self(x + dec.hopfield_association_self(x, association_mask=causal))
    t = dec.norm_residual_cross(t + dec.hopfield_association_cross((mem, t, mem)))
    ref = dec.norm_output(t + dec.linear_output(torch.relu(dec.linear_residual(t))))
    torch.testing.assert_close(y, ref)
    assert dec.output_size == 8
    with pytest.raises(ValueError, match="output_size"):
        hf.HopfieldEncoderLayer(hf.Hopfield(input_size=8, output_size=4))


def test_fully_masked_state_retrieves_zeros_not_nan():
    layer = hf.Hopfield(input_size=8, num_heads=2, update_steps_max=2, disable_out_projection=True).double()
    x = torch.randn(B, S, 8, dtype=torch.float64)
    amask = torch.zeros(S, S, dtype=torch.bool)
    amask[0] = True
    out, w = layer(x, association_mask=amask, return_weights=True)
    assert torch.isfinite(out).all() and (out[:, 0] == 0).all() and (w[:, :, 0] == 0).all()


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="one entry per head"):
        hf.Hopfield(input_size=8, num_heads=2, scaling=torch.ones(3))
    with pytest.raises(ValueError, match="update_steps_max"):
        hf.Hopfield(input_size=8, update_steps_max=-1)
    with pytest.raises(ValueError, match="input_size is required"):
        hf.Hopfield(num_heads=2)
    with pytest.raises(ValueError, match="association_activation"):
        hf.Hopfield(input_size=8, association_activation="not_a_function")
    with pytest.raises(ValueError, match="connected"):
        hf.Hopfield(input_size=8, pattern_projection_as_connected=True, stored_pattern_as_static=True)
    layer = hf.Hopfield(input_size=8, num_heads=2)
    x = torch.randn(B, S, 8)
    with pytest.raises(ValueError, match="3-D association_mask"):
        layer(x, association_mask=torch.zeros(5, S, S, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(L, S\)"):
        layer(x, association_mask=torch.zeros(S, S + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="stored_pattern_padding_mask"):
        layer(x, stored_pattern_padding_mask=torch.zeros(B, S))


def test_unused_bias_pattern_of_hopfield_layers_is_dropped_on_load():
    """hopfield-layers' concat_bias_pattern never concatenates: loading into a layer without it works."""
    cfg = dict(BASE, concat_bias=True)
    sd = hl_state_dict(cfg, torch.Generator().manual_seed(30))
    layer = build(dict(BASE))
    hf.load_hopfield_layers_state_dict(layer, sd)
    stored, state, proj = _inputs(cfg, torch.Generator().manual_seed(31))
    ref, _, _ = reference_core({k: v for k, v in sd.items() if "bias_" not in k}, dict(BASE), stored, state, proj)
    torch.testing.assert_close(_run_ours(layer, cfg, stored, state, proj)[0], ref)
