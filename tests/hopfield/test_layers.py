"""Hopfield, HopfieldPooling and HopfieldLayer: shapes, masks, equivalences, learnable α."""

import pytest
import torch
from torch.autograd import gradcheck

import kernelattn.hopfield as hf

MAPPINGS = ["softmax", "sparsemax", "entmax15", "normmax:2", "ksubsets:2"]


def _static(d, beta, mapping="softmax", steps=0):
    return hf.Hopfield(input_size=d, num_heads=1, hidden_size=d, scaling=beta, update_steps_max=steps,
                       update_steps_eps=0.0, mapping=mapping, stored_pattern_as_static=True,
                       state_pattern_as_static=True, pattern_projection_as_static=True,
                       normalize_stored_pattern=False, normalize_state_pattern=False,
                       normalize_pattern_projection=False, disable_out_projection=True).double()


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize("steps", [0, 3])
def test_static_layer_is_the_retrieval_update(mapping, steps):
    """With static patterns and no normalisation the layer is hopfield_retrieve (1 + steps updates)."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)  # stored (B, S, d)
    r = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)  # states (B, L, d)
    out = _static(5, 0.9, mapping, steps)((y, r, y))
    ref = hf.hopfield_retrieve(y, r, mapping, beta=0.9, n_iter=steps + 1, tol=0.0)
    torch.testing.assert_close(out, ref)


def test_softmax_layer_matches_sdpa():
    torch.manual_seed(0)
    layer = hf.Hopfield(input_size=16, num_heads=4, dropout=0.0).eval()
    x = torch.randn(2, 6, 16)
    out = layer(x)
    k = layer.k_proj(layer.norm_stored_pattern(x)).view(2, 6, 4, 4).transpose(1, 2)
    q = layer.q_proj(layer.norm_state_pattern(x)).view(2, 6, 4, 4).transpose(1, 2)
    v = layer.get_projected_pattern_matrix(x)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=layer.scaling)
    ref = layer.out_proj(ref.transpose(1, 2).reshape(2, 6, 16))
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_shapes_masks_and_weights(mapping):
    torch.manual_seed(1)
    layer = hf.Hopfield(input_size=12, hidden_size=8, output_size=5, pattern_size=6, num_heads=2,
                        mapping=mapping, stored_pattern_size=10, pattern_projection_size=9)
    stored, state, proj = torch.randn(3, 7, 10), torch.randn(3, 4, 12), torch.randn(3, 7, 9)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, 5:] = True
    out, w = layer((stored, state, proj), stored_pattern_padding_mask=pad, return_weights=True)
    assert out.shape == (3, 4, 5) and w.shape == (3, 2, 4, 7)
    assert (w[0, :, :, 5:] == 0).all()
    total = hf.resolve_hopfield_mapping(mapping).total
    torch.testing.assert_close(w.sum(-1), torch.full((3, 2, 4), total))
    causal = torch.triu(torch.ones(4, 7, dtype=torch.bool), diagonal=1)
    _, w2 = layer((stored, state, proj), association_mask=causal, return_weights=True)
    assert (w2[:, :, causal] == 0).all()


def test_batch_first_false_and_update_steps():
    torch.manual_seed(2)
    layer = hf.Hopfield(input_size=8, mapping="sparsemax", update_steps_max=4, batch_first=False)
    x = torch.randn(5, 3, 8)  # (L, B, E)
    out = layer(x)
    assert out.shape == (5, 3, 8)
    layer.batch_first = True
    torch.testing.assert_close(layer(x.transpose(0, 1)).transpose(0, 1), out)


@pytest.mark.parametrize("mapping", ["entmax:1.5", "normmax:2"])
def test_learnable_alpha_gets_gradient(mapping):
    torch.manual_seed(3)
    pool = hf.HopfieldPooling(8, quantity=2, num_heads=2, mapping=mapping, alpha_learnable=True)
    out = pool(torch.randn(4, 6, 8))
    assert out.shape == (4, 2 * 8)
    out.square().sum().backward()
    grad = pool.hopfield.association.alpha_raw.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("mapping", ["entmax:1.5", "normmax:2"])
def test_association_gradcheck_in_scores_and_alpha(mapping):
    assoc = hf.HopfieldAssociation(mapping, num_heads=2, alpha_learnable=True).double()
    s = (torch.randn(1, 2, 3, 5, dtype=torch.float64) * 2).requires_grad_()

    def fn(scores, raw):  # the module's own parametrisation α = 1 + softplus(raw)
        return assoc.mapping(scores, -1, 1 + torch.nn.functional.softplus(raw))

    assert gradcheck(fn, (s, assoc.alpha_raw.detach().clone().requires_grad_()))


def test_learnable_alpha_rejected_for_softmax_and_ksubsets():
    for mapping in ("softmax", "ksubsets:2"):
        with pytest.raises(ValueError, match="alpha_learnable"):
            hf.Hopfield(input_size=4, mapping=mapping, alpha_learnable=True)


def test_pooling_padding_and_layer_lookup():
    torch.manual_seed(4)
    pool = hf.HopfieldPooling(6, quantity=3, output_size=4, mapping="entmax15")
    x = torch.randn(2, 5, 6)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 2:] = True
    out, w = pool(x, stored_pattern_padding_mask=pad, return_weights=True)
    assert out.shape == (2, 12) and pool.output_size == 12
    assert (w[1, ..., 2:] == 0).all()
    # padded entries do not change the result
    torch.testing.assert_close(pool(x[1:, :2])[0], out[1])
    layer = hf.HopfieldLayer(6, quantity=10, output_size=3, mapping="normmax:2", lookup_weights_as_separated=True)
    y = layer(torch.randn(2, 4, 6))
    assert y.shape == (2, 4, 3)
    y.sum().backward()
    assert layer.lookup_weights.grad is not None and layer.target_weights.grad is not None


def test_static_size_mismatch_is_explained():
    with pytest.raises(ValueError, match="as_static"):
        hf.Hopfield(input_size=6, hidden_size=4, stored_pattern_as_static=True)


def test_alpha_bounds_clamp_like_hfyn():
    assoc = hf.HopfieldAssociation("entmax:1.5", num_heads=2, alpha_learnable=True, alpha_bounds=(1.01, 2.0))
    torch.testing.assert_close(assoc.alpha, torch.full((1, 2, 1, 1), 1.5))
    with torch.no_grad():
        assoc.alpha_raw.copy_(torch.tensor([0.5, 3.0]).view(1, 2, 1, 1))
    assert assoc.alpha.flatten().tolist() == pytest.approx([1.01, 2.0])
    s = torch.randn(1, 2, 3, 5)
    torch.testing.assert_close(assoc(s)[0, 1], hf.resolve_hopfield_mapping("sparsemax")(s[0, 1]))
    with pytest.raises(ValueError, match="alpha_bounds"):
        hf.HopfieldAssociation("entmax:1.5", alpha_learnable=True, alpha_bounds=(0.5, 2.0))
    layer = hf.Hopfield(input_size=8, num_heads=2, mapping="entmax:1.5", alpha_learnable=True, alpha_bounds=(1.01, 2.0))
    layer(torch.randn(2, 4, 8)).sum().backward()
    assert layer.association.alpha_raw.grad.abs().sum() > 0


@pytest.mark.parametrize("post", ["l2", "layernorm"])
def test_post_transform_inside_the_layer(post):
    torch.manual_seed(5)
    layer = hf.Hopfield(input_size=8, num_heads=2, update_steps_max=2, mapping="entmax15", post=post,
                        disable_out_projection=True).double()
    out = layer(torch.randn(3, 5, 8, dtype=torch.float64)).view(3, 5, 2, 4)  # per head
    if post == "l2":
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(3, 5, 2, dtype=torch.float64))
    else:
        torch.testing.assert_close(out.mean(-1), torch.zeros(3, 5, 2, dtype=torch.float64), atol=1e-12, rtol=0)


def test_static_post_layer_is_post_retrieval():
    """Static patterns, l2 post: the layer is hopfield_retrieve on l2-normalised patterns."""
    layer = _static(5, 2.0, "sparsemax", steps=3)
    layer.post_name, layer.post_fn = hf.post.resolve_post("l2")
    g = torch.Generator().manual_seed(6)
    y = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    r = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    ny, nr = torch.nn.functional.normalize(y, dim=-1), torch.nn.functional.normalize(r, dim=-1)
    ref = hf.hopfield_retrieve(ny, nr, "sparsemax", beta=2.0, n_iter=4, tol=0.0, post="l2")
    torch.testing.assert_close(layer((y, r, y)), ref)


def test_pooling_and_lookup_options():
    pool = hf.HopfieldPooling(16, quantity=4)
    assert abs(pool.pooling_weights.std().item() - 0.02) < 0.01  # hopfield-layers' init
    assert hf.HopfieldPooling(16, quantity=4, init_std=None).pooling_weights.std().item() > 0.15
    assert not hf.HopfieldPooling(16, trainable=False).pooling_weights.requires_grad
    static = hf.HopfieldPooling(8, hidden_size=4, num_heads=2, state_pattern_as_static=True,
                                normalize_state_pattern=False)
    assert static.pooling_weights.shape == (1, 1, 4)
    x, proj = torch.randn(2, 5, 8), torch.randn(2, 5, 6)
    pool = hf.HopfieldPooling(8, pattern_projection_size=6, quantity=2)
    assert pool((x, proj)).shape == (2, 2 * 8)
    look = hf.HopfieldLayer(8, quantity=5, trainable=False)
    assert not look.lookup_weights.requires_grad
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[:, 0] = True
    out, w = look(torch.randn(2, 3, 8), stored_pattern_padding_mask=pad, return_weights=True)
    assert out.shape == (2, 3, 8) and (w[..., 0] == 0).all()
    assert look.get_association_matrix(torch.randn(2, 3, 8), stored_pattern_padding_mask=pad).shape == (2, 1, 3, 5)


def test_projection_init_std_reproduces_hopfield_layers_initialisation():
    layer = hf.Hopfield(input_size=64, num_heads=2, projection_init_std=0.02)
    for proj in (layer.q_proj, layer.k_proj, layer.v_proj, layer.out_proj):
        assert abs(proj.weight.std().item() - 0.02) < 0.003 and (proj.bias == 0).all()
    default = hf.Hopfield(input_size=64, num_heads=2)
    assert default.q_proj.weight.std().item() > 0.05 and (default.q_proj.bias != 0).any()
    pool = hf.HopfieldPooling(64, quantity=2, projection_init_std=0.02)  # queries and projections as hflayers
    assert abs(pool.pooling_weights.std().item() - 0.02) < 0.01 and (pool.hopfield.k_proj.bias == 0).all()
    with pytest.raises(ValueError, match="projection_init_std"):
        hf.Hopfield(input_size=8, projection_init_std=0.0)
