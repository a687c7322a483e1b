"""Generators and metrics of the length-generalisation and LM tasks."""

import random

import pytest
import torch

from kernelattn.tasks import CopyTask, LMTask, MQMTARTask, ReverseTask, SortTask, build_task


class Oracle(torch.nn.Module):
    """A 'model' whose argmax is a fixed answer sheet (targets, optionally corrupted)."""

    def __init__(self, answers: torch.Tensor, vocab: int):
        super().__init__()
        self.answers, self.vocab = answers, vocab
        self.i = 0

    def forward(self, x):
        ans = self.answers[self.i:self.i + len(x)].clamp_min(0)
        self.i += len(x)
        return torch.nn.functional.one_hot(ans, self.vocab).float()


@pytest.mark.parametrize("cls, fn", [(CopyTask, lambda s: s), (ReverseTask, lambda s: s[::-1]), (SortTask, sorted)])
def test_sequence_format_and_targets(cls, fn):
    t = cls(train_min=3, train_max=6, test_lengths=(6, 12))
    v = t.vocab
    x, y = t.example(5, random.Random(1))
    assert x[0] == v.BOS and x[6] == v.SEP and len(x) == t.total_length(5)
    src = x[1:6]
    assert y[:6] == [-100] * 6 and y[6:] == list(fn(src)) + [v.EOS]
    assert x[7:] == list(fn(src))  # teacher forcing: the input continues with the target
    xb, yb = t.sample("train", 8, torch.Generator().manual_seed(0))
    assert xb.shape == yb.shape == (8, t.seq_len) and xb.max() < t.vocab_size


def test_generation_is_deterministic_and_seeded():
    t = CopyTask()
    a = t.sample("train", 4, torch.Generator().manual_seed(3))
    b = t.sample("train", 4, torch.Generator().manual_seed(3))
    c = t.sample("train", 4, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert torch.equal(CopyTask(seed=1).eval_set(32)[0], CopyTask(seed=1).eval_set(32)[0])
    assert not torch.equal(CopyTask(seed=1).eval_set(32)[0], CopyTask(seed=2).eval_set(32)[0])


def test_sequence_metrics_on_hand_built_predictions():
    t = CopyTask(train_min=4, train_max=4, test_lengths=(4,), n_eval=10, eval_batch=4)
    x, y = t.eval_set(4)
    perfect = t.score(Oracle(y, t.vocab_size), x, y, "cpu")
    assert perfect == {"exact_match": 1.0, "token_accuracy": 1.0}
    wrong = y.clone()
    wrong[:5, 6] = (wrong[:5, 6] + 1) % t.vocab.A  # one wrong target token in half the rows
    m = t.score(Oracle(wrong, t.vocab_size), x, y, "cpu")
    assert m["exact_match"] == 0.5
    assert m["token_accuracy"] == pytest.approx(1 - 5 / (10 * 4))  # 4 target symbols per row; EOS not scored


@pytest.mark.parametrize("cls", [CopyTask, ReverseTask, SortTask])
def test_exact_match_excludes_eos_as_the_paper_scores_it(cls):
    # hand-built: source 2 0 1 -> row [BOS 2 0 1 SEP t t t], labels t t t EOS after SEP
    t = cls(train_min=3, train_max=3, test_lengths=(3,), alphabet=4)
    v = t.vocab
    tgt = {"copy": [2, 0, 1], "reverse": [1, 0, 2], "sort": [0, 1, 2]}[t.name]
    x = torch.tensor([[v.BOS, 2, 0, 1, v.SEP] + tgt] * 2)
    y = torch.tensor([[-100] * 4 + tgt + [v.EOS]] * 2)
    assert x.tolist()[0] == t.example(3, _FixedSource([2, 0, 1]))[0]
    pred = y.clone()
    pred[0, -1] = 0            # row 0: every target token right, EOS wrong
    pred[1, 4] = (tgt[0] + 1) % 4  # row 1: first target token wrong, EOS right
    m = t.score(Oracle(pred, t.vocab_size), x, y, "cpu")
    assert m == {"exact_match": 0.5, "token_accuracy": 5 / 6}
    old = cls(train_min=3, train_max=3, test_lengths=(3,), alphabet=4, score_eos=True)
    assert old.score(Oracle(pred, t.vocab_size), x, y, "cpu") == {"exact_match": 0.0, "token_accuracy": 6 / 8}


class _FixedSource(random.Random):
    """A Random whose randrange replays a fixed source."""

    def __init__(self, tokens):
        super().__init__(0)
        self.tokens = list(tokens)

    def randrange(self, *a, **k):
        return self.tokens.pop(0)


def test_copy_vocab_matches_the_paper():
    assert CopyTask().vocab_size == 36  # 32 symbols + BOS, SEP, EOS, PAD (the paper's ids 32..35)


def test_lm_recall_mask_marks_repeated_names_after_their_first_letter():
    text = b"Once Zorbina met Quelp. Then Zorbina ran."
    x = torch.tensor(list(text[:-1]))[None]
    y = torch.tensor(list(text[1:]))[None]
    m = LMTask.recall_mask(x, y)
    assert bytes(y[0][m[0]].tolist()) == b"orbina"


def test_build_task_errors():
    with pytest.raises(ValueError, match="unknown task"):
        build_task("nope")
    with pytest.raises(ValueError, match="train_min"):
        CopyTask(train_min=5, train_max=2)
    with pytest.raises(ValueError, match="unknown option"):
        build_task("copy", foo=1)
