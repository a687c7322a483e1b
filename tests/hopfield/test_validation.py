"""Every Hopfield shape, dtype, device and mask mistake is a ValueError naming the argument;
fully masked states and an unregularised continuous memory have defined, documented values."""

import math

import pytest
import torch

import kernelattn.hopfield as hf

G = torch.Generator().manual_seed(0)  # never the global RNG: other modules' tests draw from it unseeded
X = torch.randn(5, 4, generator=G, dtype=torch.float64)
Q = torch.randn(3, 4, generator=G, dtype=torch.float64)
MASK = torch.ones(3, 5, dtype=torch.bool)


def _randn(*shape, dtype=torch.float64):
    return torch.randn(*shape, generator=G, dtype=dtype)


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """Layers draw their initial weights from the global RNG; leave it as it was for later tests."""
    with torch.random.fork_rng(devices=[]):
        yield

BAD = [  # (override of the arguments, text the message must contain)
    (dict(memories=X.float()), "dtype"),
    (dict(memories=X.long()), "memories"),
    (dict(memories=[[1.0, 2.0]]), "memories"),
    (dict(memories=X[0]), "memories"),
    (dict(memories=X[:0]), "no stored pattern"),
    (dict(memories=X[:, :0], queries=Q[:, :0]), "memories"),
    (dict(queries=Q[0]), "queries"),
    (dict(queries=_randn(3, 6)), "pattern size"),
    (dict(queries=_randn(2, 3, 4), memories=_randn(4, 5, 4)),
     "broadcast"),
    (dict(beta=float("nan")), "beta"),
    (dict(beta=0.0), "beta"),
    (dict(beta=float("inf")), "beta"),
    (dict(beta="1"), "beta"),
    (dict(mask=MASK.float()), "mask"),
    (dict(mask=MASK[:, :4]), "mask"),
    (dict(mask=torch.tensor(True)), "mask"),
    (dict(mask=MASK.tolist()), "mask"),
]


def _call(fn, **over):
    args = dict(memories=X, queries=Q, beta=1.0, mask=None)
    args.update(over)
    if fn is hf.dam_retrieve:  # no mask argument (the mask cases are not drawn for it)
        return fn(args["memories"], args["queries"], beta=args["beta"])
    return fn(args["memories"], args["queries"], "sparsemax", beta=args["beta"], mask=args["mask"])


CASES = [pytest.param(fn, over, needle, id=f"{fn.__name__}-{next(iter(over))}-{i}")
         for fn in (hf.hopfield_retrieve, hf.hopfield_step, hf.hopfield_energy, hf.dam_retrieve)
         for i, (over, needle) in enumerate(BAD) if not (fn is hf.dam_retrieve and "mask" in over)]


@pytest.mark.parametrize("fn, over, needle", CASES)
def test_bad_arguments_raise_value_or_type_error_naming_them(fn, over, needle):
    with pytest.raises((ValueError, TypeError), match=needle):
        _call(fn, **over)


@pytest.mark.parametrize("mapping", ["softmax", "sparsemax", "entmax15", "normmax", "ksubsets:2"])
def test_fully_masked_state_retrieves_zeros_with_finite_gradients_and_infinite_energy(mapping):
    mem, q = X.clone().requires_grad_(), Q.clone().requires_grad_()
    mask = MASK.clone()
    mask[1] = False  # query 1 sees no pattern
    info = hf.hopfield_retrieve(mem, q, mapping, mask=mask, n_iter=3, return_info=True)
    assert torch.equal(info.states[1], torch.zeros(4, dtype=torch.float64))
    assert torch.equal(info.weights[1], torch.zeros(5, dtype=torch.float64))
    full = hf.hopfield_retrieve(X, Q, mapping, mask=MASK, n_iter=3)
    assert torch.allclose(info.states[[0, 2]], full[[0, 2]])  # the other queries are untouched
    info.states.sum().backward()
    assert torch.isfinite(mem.grad).all() and torch.isfinite(q.grad).all()
    energy = hf.hopfield_energy(X, Q, mapping, mask=mask)
    assert math.isinf(energy[1]) and energy[1] > 0 and torch.isfinite(energy[[0, 2]]).all()


def test_energy_checks_its_arguments_it_used_to_accept_anything():
    with pytest.raises(ValueError, match="pattern size"):
        hf.hopfield_energy(X, Q[:, :3])
    with pytest.raises(ValueError, match="mask"):
        hf.hopfield_energy(X, Q, mask=torch.ones(5))


def test_mask_on_another_device_is_named():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    with pytest.raises(ValueError, match="mask is on"):
        hf.hopfield_retrieve(X, Q, mask=MASK.cuda())


@pytest.mark.parametrize("basis", ["rectangular", "gaussian"])
def test_ridge_zero_with_more_bases_than_patterns_is_the_minimum_norm_limit(basis):
    mem = X[:3]  # 3 patterns, 8 bases: FᵀF is singular
    exact = hf.ContinuousMemory(mem, 8, basis, ridge=0.0)
    assert torch.isfinite(exact.coefficients).all()
    tiny = hf.ContinuousMemory(mem, 8, basis, ridge=1e-10)
    assert torch.allclose(exact.coefficients, tiny.coefficients, atol=1e-5)  # the λ → 0⁺ limit
    out = exact.retrieve(Q, beta=2.0, n_iter=3)
    assert out.shape == Q.shape and torch.isfinite(out).all()
    # with enough patterns, ridge=0 is plain least squares
    many = _randn(40, 4)
    ls = hf.ContinuousMemory(many, 4, basis, ridge=0.0)
    design = ls.psi(ls.times)
    assert torch.allclose(ls.coefficients, torch.linalg.lstsq(design, many).solution, atol=1e-10)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(ridge=float("nan")), "ridge"), (dict(ridge=-1.0), "ridge"), (dict(n_basis=0), "n_basis"),
    (dict(n_basis=2.5), "n_basis"), (dict(basis="spline"), "basis"), (dict(width=0.0), "width"),
    (dict(times=torch.full((5,), float("nan"), dtype=torch.float64)), "times"),
    (dict(memories=X.long()), "memories"), (dict(memories=X[:0]), "memories"),
])
def test_continuous_memory_arguments(kwargs, needle):
    args = dict(memories=X, n_basis=4)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=needle):
        hf.ContinuousMemory(**args)


@pytest.mark.parametrize("call, needle", [
    (lambda m: m.retrieve(Q.float()), "queries"), (lambda m: m.retrieve(Q[:, :3]), "queries"),
    (lambda m: m.retrieve(Q, beta=float("nan")), "beta"), (lambda m: m.retrieve(Q, tol=-1.0), "tol"),
    (lambda m: m.retrieve(Q, method="fast"), "method"), (lambda m: m.energy(Q, beta=0.0), "beta"),
    (lambda m: m.nodes(0), "n_points"),
])
def test_continuous_memory_calls(call, needle):
    with pytest.raises((ValueError, TypeError), match=needle):
        call(hf.ContinuousMemory(X, 4))


@pytest.mark.parametrize("call, needle", [
    (lambda: hf.free_recall(X, beta=float("nan")), "beta"), (lambda: hf.free_recall(X, n_iter=0), "n_iter"),
    (lambda: hf.free_recall(X, decay=2.0), "decay"), (lambda: hf.free_recall(X, method="x"), "method"),
    (lambda: hf.free_recall(X[:1]), "two stored patterns"), (lambda: hf.free_recall(X.long()), "memories"),
    (lambda: hf.sequential_recall(X, k=9), "k"), (lambda: hf.sequential_recall(X, omega=float("inf")), "omega"),
    (lambda: hf.dam_retrieve(X, Q, kind=3), "kind"), (lambda: hf.dam_retrieve(X, Q, inner_beta=-1.0), "inner_beta"),
    (lambda: hf.pattern_margins(X.long()), "memories"),
])
def test_recall_and_dam_arguments(call, needle):
    with pytest.raises((ValueError, TypeError), match=needle):
        call()


@pytest.mark.parametrize("call, needle", [
    (lambda h, x: h(_randn(2, 3, 5, dtype=torch.float32)), "stored_pattern has 5 features"),
    (lambda h, x: h((x, _randn(2, 3, 5, dtype=torch.float32), x)), "state_pattern has 5 features"),
    (lambda h, x: h(x.double()), "weights are torch.float32"),
    (lambda h, x: hf.Hopfield(input_size=4, scaling=float("nan"))(x), "scaling"),
    (lambda h, x: hf.HopfieldPooling(4)(_randn(2, 3, 6, dtype=torch.float32)), "6 features"),
    (lambda h, x: hf.HopfieldLayer(4)(_randn(2, 3, 6, dtype=torch.float32)), "6 features"),
])
def test_layer_inputs_that_do_not_fit_the_layer_are_named(call, needle):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=needle):
        call(hf.Hopfield(input_size=4, num_heads=2), _randn(2, 3, 4, dtype=torch.float32))
