"""Edge cases: masks, huge scores, ties, length-1 rows, half precision, and bad arguments."""

import pytest
import torch

import kernelattn as ka

ALL = {
    "softmax": ka.softmax, "sparsemax": ka.sparsemax, "entmax15": ka.entmax15,
    "entmax43": lambda t: ka.entmax(t, 4 / 3), "entmax1.1": lambda t: ka.entmax(t, 1.1),
    "entmax2.5": lambda t: ka.entmax(t, 2.5), "normalized_relu": lambda t: ka.normalized_relu(t, 2, bias=1.0),
    "relumax": ka.relumax, "topk_softmax": lambda t: ka.topk_softmax(t, 3),
    "topk_uniform": lambda t: ka.topk_uniform(t, 3),
}


@pytest.mark.parametrize("name", ALL)
def test_fully_masked_row_is_zero_not_nan(name):
    x = torch.randn(4, 9)
    x[1] = float("-inf")
    x[2, 1:] = float("-inf")
    x[2, 0] = 0.5  # inside normalized_relu's support too
    p = ALL[name](x)
    assert torch.isfinite(p).all()
    assert (p[1] == 0).all()
    assert p[2, 0] == pytest.approx(1.0) and (p[2, 1:] == 0).all()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_huge_scores_and_length_one_rows(name, dtype):
    if dtype == torch.float16 and name == "normalized_relu":
        pytest.skip("normalized_relu of 1e4 scores is a user-chosen scale; covered in float32")
    x = (torch.randn(3, 50) * 1e4).to(dtype)
    p = ALL[name](x)
    assert p.dtype == dtype and torch.isfinite(p).all()
    one = ALL[name](torch.randn(5, 1).to(dtype))
    if name == "normalized_relu":  # a fixed bandwidth may leave the only key outside the support
        assert ((one == 0) | (one == 1)).all()
    else:
        assert torch.equal(one, torch.ones(5, 1, dtype=dtype))


@pytest.mark.parametrize("alpha", [1.5, 4 / 3, 2.0, 1.25])
def test_ties_share_weight_equally(alpha):
    x = torch.tensor([[2.0, 2.0, 2.0, -1.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    p = ka.entmax(x, alpha)
    torch.testing.assert_close(p[1], torch.full((4,), 0.25, dtype=torch.float64))
    assert p[0, 0] == p[0, 1] == p[0, 2]


@pytest.mark.parametrize("alpha", [1.5, 4 / 3, 2.0, 1.25, 1.75])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_support_agrees_with_float64(alpha, dtype):
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(64, 300, generator=g) * 3).to(dtype)
    p_half = ka.entmax(x, alpha)
    p64 = ka.entmax(x.double(), alpha)  # the same (rounded) scores, solved in float64
    assert p_half.dtype == dtype
    tiny = torch.finfo(dtype).smallest_normal if dtype == torch.float16 else 0.0
    # entries float16 cannot represent (< its smallest normal) may flush to zero; all else must agree
    decided = (p64 == 0) | (p64 > tiny)
    assert torch.equal((p_half > 0)[decided], (p64 > 0)[decided])
    torch.testing.assert_close(p_half.double(), p64, atol=1e-2, rtol=0)


def test_normalized_relu_empty_support_is_zero():
    x = torch.tensor([[-5.0, -6.0, -7.0], [1.0, 0.0, -1.0]])
    p = ka.normalized_relu(x, 1, scale=1.0, bias=0.5)
    assert (p[0] == 0).all()
    torch.testing.assert_close(p[1], torch.tensor([0.75, 0.25, 0.0]))


@pytest.mark.parametrize("call, arg", [
    (lambda x: ka.entmax(x, 0.5), "alpha"),
    (lambda x: ka.entmax(x, float("nan")), "alpha"),
    (lambda x: ka.entmax(x, torch.tensor([[0.9]])), "alpha"),
    (lambda x: ka.entmax(x, torch.ones(3, 4) * 1.5), "alpha"),
    (lambda x: ka.topk_softmax(x, 0), "k"),
    (lambda x: ka.topk_uniform(x, -1), "k"),
    (lambda x: ka.normalized_relu(x, 0), "n"),
    (lambda x: ka.normalized_relu(x, 1.5), "n"),
    (lambda x: ka.normalized_relu(x, 1, scale=0.0), "scale"),
    (lambda x: ka.relumax(x, temperature=-1), "temperature"),
    (lambda x: ka.sparsemax(x, dim=2), "dim"),
    (lambda x: ka.entmax15(x, dim=-3), "dim"),
    (lambda x: ka.sparsemax(torch.tensor([[1.0, float("nan")]])), "NaN"),
    (lambda x: ka.softmax(torch.tensor([[1.0, float("inf")]])), r"\+inf"),
    (lambda x: ka.sparsemax(torch.tensor([1, 2])), "floating"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call(torch.randn(3, 4))


def test_registry_names_and_errors():
    assert ka.resolve_mapping("triweight").alpha == pytest.approx(4 / 3)
    assert ka.resolve_mapping("epanechnikov").alpha == 2.0
    assert ka.resolve_mapping("gaussian").is_softmax
    assert ka.resolve_mapping("entmax:1.25").alpha == 1.25
    assert ka.resolve_mapping("topk_uniform", topk=4).k == 4
    for bad, msg in [("nope", "unknown method"), ("entmax:x", "entmax:<alpha>"), ("entmax:0.5", "alpha"),
                     ("topk_softmax", "topk")]:
        with pytest.raises(ValueError, match=msg):
            ka.resolve_mapping(bad)
    x = torch.randn(2, 5)
    for name in ka.METHODS:
        p = ka.resolve_mapping(name, topk=2)(x)
        torch.testing.assert_close(p.sum(-1), torch.ones(2))


def test_learnable_alpha_module_trains():
    m = ka.Entmax(alpha=torch.full((1, 3, 1), 1.5), learnable=True)
    x = torch.randn(2, 3, 10)
    torch.testing.assert_close(m.alpha, torch.full((1, 3, 1), 1.5), atol=1e-5, rtol=0)
    loss = (m(x) * torch.randn(2, 3, 10)).sum()
    loss.backward()
    assert m.theta.grad is not None and torch.isfinite(m.theta.grad).all() and m.theta.grad.abs().sum() > 0
