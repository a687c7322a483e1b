"""Token ids the model cannot embed are a ValueError naming idx/targets and vocab_size."""

import pytest
import torch

from kernelattn.models import build_model


@pytest.fixture(params=["gpt", "memory_mosaics"])
def model(request):
    with torch.random.fork_rng(devices=[]):  # leave the global RNG as it was for later tests
        torch.manual_seed(0)
        yield build_model(request.param, vocab_size=10, n_layer=1, n_head=2, n_embd=8, block_size=8)


@pytest.mark.parametrize("idx, needle", [
    (torch.tensor([[1, 2, 10]]), "token id 10.*vocab_size=10"),
    (torch.tensor([[-1, 2]]), "token id -1.*vocab_size=10"),
    (torch.tensor([[1.0, 2.0]]), "idx must hold int64"),
    (torch.tensor([1, 2]), "idx must be \\(batch, time\\)"),
    ([[1, 2]], "idx must be a torch.Tensor"),
])
def test_bad_idx_is_named(model, idx, needle):
    with pytest.raises(ValueError, match=needle):
        model(idx)


def test_targets_are_checked_and_minus_100_is_ignored(model):
    idx = torch.tensor([[1, 2, 3]])
    _, loss = model(idx, torch.tensor([[2, 3, -100]]))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="targets holds token id 12"):
        model(idx, torch.tensor([[2, 3, 12]]))
    with pytest.raises(ValueError, match="targets must have idx's shape"):
        model(idx, torch.tensor([[2, 3]]))
    assert model(idx.int()).shape == (1, 3, 10)  # int32 ids embed too
