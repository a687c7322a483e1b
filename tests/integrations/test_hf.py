"""kernelattn as transformers attention implementations, on tiny randomly initialised models."""

import importlib
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
kh = pytest.importorskip("kernelattn.integrations.hf")

from kernelattn.integrations.hf import attention as hf_attention  # noqa: E402

V = 100  # vocabulary of every tiny model
DECODERS = ["llama", "qwen2", "mistral", "gpt2"]
ENCODERS = ["bert", "modernbert"]


@pytest.fixture(autouse=True)
def _keep_global_rng():
    # These tests seed torch; leave the global generator as later test modules expect to find it.
    with torch.random.fork_rng():
        yield


def tiny(kind: str, attn: str = "sdpa", seed: int = 0):
    """A tiny model of an architecture family, in eval mode, float32."""
    t = transformers
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=V)
    if kind == "llama":
        cfg, cls = t.LlamaConfig(num_key_value_heads=2, **small), t.LlamaForCausalLM
    elif kind == "qwen2":
        cfg, cls = t.Qwen2Config(num_key_value_heads=2, **small), t.Qwen2ForCausalLM
    elif kind == "mistral":  # a window shorter than the test sequences, so the sliding mask matters
        cfg, cls = t.MistralConfig(num_key_value_heads=1, sliding_window=6, **small), t.MistralForCausalLM
    elif kind == "gpt2":
        cfg = t.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=V, n_positions=64, attn_pdrop=0.0,
                           resid_pdrop=0.0, embd_pdrop=0.0)
        cls = t.GPT2LMHeadModel
    elif kind == "bert":
        cfg, cls = t.BertConfig(attention_probs_dropout_prob=0.0, **small), t.BertModel
    elif kind == "modernbert":
        cfg = t.ModernBertConfig(global_attn_every_n_layers=2, local_attention=6, pad_token_id=0, **small)
        cls = t.ModernBertModel
    else:
        raise AssertionError(kind)
    kh.register()
    torch.manual_seed(seed)
    return cls._from_config(cfg, attn_implementation=attn).eval()


def out_of(model, **kw):
    o = model(**kw)
    return o.logits if hasattr(o, "logits") else o.last_hidden_state


def ids(b: int, t: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, V, (b, t), generator=g)


def left_pad(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded batch: input_ids, attention_mask, position_ids (real tokens start at 0)."""
    T = max(len(s) for s in seqs)
    x = torch.zeros(len(seqs), T, dtype=torch.long)
    m = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, T - len(s):], m[i, T - len(s):] = s, 1
    pos = (m.cumsum(-1) - 1).clamp(min=0)
    return x, m, pos


# -- softmax is sdpa ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", DECODERS + ENCODERS)
def test_kernelattn_softmax_equals_sdpa(kind):
    model = tiny(kind)
    x = ids(2, 12)
    mask = torch.ones_like(x)
    mask[1, 9:] = 0  # right padding on one row
    ref = out_of(model, input_ids=x, attention_mask=mask)
    model.set_attn_implementation("kernelattn_softmax")
    got = out_of(model, input_ids=x, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], ref[real], atol=1e-5, rtol=1e-5)


def tiny_seq2seq(kind: str, attn: str = "sdpa"):
    """Encoder-decoder: cross-attention, and (T5) a relative position bias added to the scores."""
    t = transformers
    if kind == "t5":
        cfg = t.T5Config(vocab_size=V, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, dropout_rate=0.0,
                         decoder_start_token_id=0, pad_token_id=0)
        cls = t.T5ForConditionalGeneration
    else:
        cfg = t.BartConfig(vocab_size=V, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, dropout=0.0,
                           attention_dropout=0.0, max_position_embeddings=64)
        cls = t.BartForConditionalGeneration
    kh.register()
    torch.manual_seed(0)
    return cls._from_config(cfg, attn_implementation=attn).eval()


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_encoder_decoder_softmax_equals_sdpa_and_entmax_cache_is_exact(kind):
    model = tiny_seq2seq(kind)
    x = ids(2, 10)
    mask = torch.ones_like(x)
    mask[1, 7:] = 0
    dec = ids(2, 6, seed=3)
    ref = model(input_ids=x, attention_mask=mask, decoder_input_ids=dec).logits
    model.set_attn_implementation("kernelattn_softmax")
    got = model(input_ids=x, attention_mask=mask, decoder_input_ids=dec).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    model.set_attn_implementation("kernelattn_entmax15")
    kw = dict(attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(model.generate(x, use_cache=True, **kw), model.generate(x, use_cache=False, **kw))


# -- generation: the cache path equals the full forward ---------------------------------------------

@pytest.mark.parametrize("kind", DECODERS)
def test_entmax15_cached_generation_equals_uncached(kind):
    model = tiny(kind, "kernelattn_entmax15")
    x = ids(2, 7)
    calls = []
    real_decode = hf_attention.decode_attention

    def spy(*a, **k):
        calls.append(a[0].shape)
        return real_decode(*a, **k)

    hf_attention.decode_attention = spy
    try:
        cached = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=8, do_sample=False,
                                use_cache=True, pad_token_id=0)
    finally:
        hf_attention.decode_attention = real_decode
    uncached = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=8, do_sample=False,
                              use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)
    assert len(calls) == 7 * model.config.num_hidden_layers and all(s[2] == 1 for s in calls)  # single-query steps

    # logits of one forward over the generated sequence == prefill then one token at a time
    full = model(cached).logits
    cache = transformers.DynamicCache(config=model.config)
    steps = [model(cached[:, :7], past_key_values=cache, use_cache=True).logits]
    for t in range(7, cached.shape[1]):
        steps.append(model(cached[:, t:t + 1], past_key_values=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=2e-5, rtol=1e-5)


def test_static_cache_generation_equals_dynamic():
    model = tiny("llama", "kernelattn_entmax15")
    x = ids(2, 6)
    kw = dict(attention_mask=torch.ones_like(x), max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(x, cache_implementation="static", **kw), model.generate(x, **kw))


# -- padding and packing --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", DECODERS)
def test_left_padding_matches_unpadded(kind):
    model = tiny(kind, "kernelattn_entmax15")
    seqs = [ids(1, 10, seed=2)[0], ids(1, 6, seed=3)[0]]
    x, m, pos = left_pad(seqs)
    batched = model(input_ids=x, attention_mask=m, position_ids=pos).logits
    for i, s in enumerate(seqs):
        alone = model(input_ids=s[None]).logits[0]
        torch.testing.assert_close(batched[i, -len(s):], alone, atol=2e-5, rtol=1e-5)
    # and generation from a left-padded batch equals generating each prompt alone
    gen = model.generate(x, attention_mask=m, max_new_tokens=5, do_sample=False, pad_token_id=0)
    for i, s in enumerate(seqs):
        alone = model.generate(s[None], attention_mask=torch.ones(1, len(s), dtype=torch.long), max_new_tokens=5,
                               do_sample=False, pad_token_id=0)
        assert torch.equal(gen[i, -5:], alone[0, -5:])


@pytest.mark.parametrize("kind", ["llama"] + ENCODERS)
def test_right_padding_matches_unpadded(kind):
    model = tiny(kind, "kernelattn_entmax15")
    seqs = [ids(1, 10, seed=4)[0], ids(1, 7, seed=5)[0]]
    x = torch.zeros(2, 10, dtype=torch.long)
    m = torch.zeros(2, 10, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, :len(s)], m[i, :len(s)] = s, 1
    batched = out_of(model, input_ids=x, attention_mask=m)
    for i, s in enumerate(seqs):
        alone = out_of(model, input_ids=s[None])[0]
        torch.testing.assert_close(batched[i, :len(s)], alone, atol=2e-5, rtol=1e-5)


def test_packed_sequences_match_separate_runs():
    # position_ids that restart mark packed sequences; transformers folds that into the mask
    model = tiny("llama", "kernelattn_entmax15")
    a, b = ids(1, 7, seed=6)[0], ids(1, 5, seed=7)[0]
    packed = torch.cat([a, b])[None]
    pos = torch.cat([torch.arange(7), torch.arange(5)])[None]
    got = model(input_ids=packed, position_ids=pos, use_cache=False).logits[0]  # packing is a training format
    torch.testing.assert_close(got[:7], model(input_ids=a[None]).logits[0], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got[7:], model(input_ids=b[None]).logits[0], atol=2e-5, rtol=1e-5)


# -- attention weights against a float64 reference --------------------------------------------------

def test_output_attentions_match_float64_entmax(monkeypatch):
    entmax_pkg = pytest.importorskip("entmax")
    model = tiny("llama", "kernelattn_entmax15")
    seen = []
    original = transformers.AttentionInterface._global_mapping["kernelattn_entmax15"]

    def record(module, query, key, value, attention_mask, **kw):
        seen.append((query.detach(), key.detach(), attention_mask, kw["scaling"]))
        return original(module, query, key, value, attention_mask, **kw)

    monkeypatch.setitem(transformers.AttentionInterface._global_mapping, "kernelattn_entmax15", record)
    x, m, pos = left_pad([ids(1, 9, seed=8)[0], ids(1, 6, seed=9)[0]])
    out = model(input_ids=x, attention_mask=m, position_ids=pos, output_attentions=True)
    assert len(out.attentions) == len(seen) == 2
    for w, (q, k, mask, scaling) in zip(out.attentions, seen):
        q, k = q.double(), k.double().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        s = scaling * q @ k.transpose(-2, -1)  # (B, H, T, T)
        s = s.masked_fill(~mask, float("-inf"))
        real = m.bool()[:, None, :, None].expand_as(s)  # rows of real tokens (padded rows are all -inf)
        ref = entmax_pkg.entmax15(s.masked_fill(~real, 0.0), dim=-1)
        assert w.shape == s.shape
        torch.testing.assert_close(w.double()[real], ref[real], atol=1e-5, rtol=0)
        assert (w.double()[real] == 0).any()  # exactly sparse
        torch.testing.assert_close(w.sum(-1)[real[..., 0]], torch.ones_like(w.sum(-1)[real[..., 0]]))


# -- learnable α ------------------------------------------------------------------------------------

def test_gradients_reach_learned_alpha():
    model = tiny("llama")
    kh.sparsify(model, method="entmax15", learn_alpha=True)
    model.train()
    x = ids(2, 12)
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    params = {n: p for n, p in model.named_parameters() if n.endswith(kh.ALPHA_PARAM)}
    assert len(params) == model.config.num_hidden_layers
    for n, p in params.items():
        assert p.shape == (model.config.num_attention_heads,)
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n
    assert all(torch.allclose(a, torch.full_like(a, 1.5)) for a in kh.alphas(model).values())


@pytest.mark.parametrize("kind", ["gpt2", "bert", "modernbert"])
def test_learned_alpha_on_other_architectures(kind):
    model = kh.sparsify(tiny(kind), method="sparsemax", learn_alpha=True, alpha_init=1.8)
    model.train()
    out_of(model, input_ids=ids(2, 9)).square().mean().backward()
    found = kh.alphas(model)
    assert len(found) == 2  # one attention module per layer, not its wrapper
    for name, module in kh.attention_modules(model):
        theta = getattr(module, kh.ALPHA_PARAM)
        assert theta.shape == (4,) and theta.grad is not None and theta.grad.abs().sum() > 0, name
        torch.testing.assert_close(found[name], torch.full((4,), 1.8))


def test_save_load_round_trip_keeps_alpha(tmp_path):
    model = tiny("llama")
    kh.sparsify(model, method="entmax15", learn_alpha=True)
    with torch.no_grad():  # move α away from its initial value, differently per head
        for n, p in model.named_parameters():
            if n.endswith(kh.ALPHA_PARAM):
                p.add_(torch.linspace(-1.0, 1.0, p.numel()))
    x = ids(2, 10)
    ref = model(input_ids=x).logits
    model.save_pretrained(tmp_path)

    by_name = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="kernelattn_entmax15")
    by_sparsify = kh.sparsify(transformers.AutoModelForCausalLM.from_pretrained(tmp_path), method="entmax15",
                              learn_alpha=True)
    for loaded in (by_name, by_sparsify):
        loaded.eval()
        for (n1, a1), (n2, a2) in zip(kh.alphas(model).items(), kh.alphas(loaded).items()):
            assert n1 == n2 and torch.equal(a1, a2)
        torch.testing.assert_close(loaded(input_ids=x).logits, ref, atol=0, rtol=0)


def test_loading_without_the_hook_is_refused_not_silently_reset(tmp_path):
    from kernelattn.integrations.hf import alpha as hf_alpha

    kh.sparsify(tiny("llama"), method="entmax15", learn_alpha=True).save_pretrained(tmp_path)
    hf_alpha._hook_handle.remove()  # as if register() had not been called before loading
    hf_alpha._hook_handle = None
    try:
        lost = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
        assert kh.alphas(lost) == {}
        with pytest.raises(ValueError, match="before kernelattn.integrations.hf.register"):
            kh.sparsify(lost, method="entmax15", learn_alpha=True)
        lost.set_attn_implementation("kernelattn_entmax15")
        with pytest.raises(ValueError, match="register"):
            lost(input_ids=ids(1, 4))
    finally:
        kh.register()


# -- clear errors -----------------------------------------------------------------------------------

def test_errors_name_the_argument():
    model = tiny("llama")
    with pytest.raises(ValueError, match="unknown method"):
        kh.sparsify(model, method="entmax17")
    with pytest.raises(ValueError, match="learn_alpha"):
        kh.sparsify(model, method="softmax", learn_alpha=True)
    with pytest.raises(ValueError, match="alpha_init must be > 1"):
        kh.sparsify(model, method="entmax15", learn_alpha=True, alpha_init=0.9)
    with pytest.raises(ValueError, match="topk"):
        kh.sparsify(model, method="topk_softmax")
    with pytest.raises(ValueError, match="topk applies to the top-k methods only"):
        kh.sparsify(model, method="entmax15", topk=4)
    with pytest.raises(ValueError, match="do not apply"):
        kh.sparsify(model, method="entmax15", temperature=2.0)
    with pytest.raises(ValueError, match="learn_alpha=True"):
        kh.sparsify(model, method="entmax15", alpha_init=1.3)
    model.set_attn_implementation("kernelattn_topk_softmax")
    with pytest.raises(ValueError, match="topk=k"):
        model(input_ids=ids(1, 4))


def test_attention_dropout_refused_for_sparse_methods():
    t = transformers
    cfg = t.LlamaConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128,
                        vocab_size=V, attention_dropout=0.1)
    kh.register()
    model = t.LlamaForCausalLM._from_config(cfg, attn_implementation="kernelattn_entmax15").train()
    with pytest.raises(ValueError, match="dropout"):
        model(input_ids=ids(1, 5))
    model.eval()
    model(input_ids=ids(1, 5))  # no dropout at inference
    model.set_attn_implementation("kernelattn_softmax")
    model.train()(input_ids=ids(1, 5))  # softmax takes dropout (through SDPA)


def test_topk_and_other_methods_run_through_sparsify():
    model = tiny("qwen2")
    x = ids(2, 9)
    for method, kw in [("topk_softmax", {"topk": 3}), ("sparsemax", {}), ("normalized_relu", {}),
                       ("entmax:1.25", {})]:
        kh.sparsify(model, method=method, **kw)
        assert model.config._attn_implementation == kh.implementation_name(method)
        assert torch.isfinite(model(input_ids=x).logits).all()


def test_import_without_transformers_says_how_to_install(monkeypatch):
    for name in [n for n in sys.modules if n.startswith("kernelattn.integrations.hf")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'kernelattn\[hf\]'"):
        importlib.import_module("kernelattn.integrations.hf")
