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


def test_mqmtar_queries_ask_listed_keys_and_label_their_values():
    t = MQMTARTask(train_min=24, train_max=48, n_queries=3)
    v = t.vocab
    for seed in range(20):
        x, y = t.example(40, random.Random(seed))
        assert len(x) == t.total_length(40) - 5 * (3 - min(3, 40 // 8)) or len(x) <= t.total_length(40)
        sep = x.index(v.SEP)
        ctx = x[1:sep]
        pairs = {(ctx[i], ctx[i + 1]): (ctx[i + 3], ctx[i + 4]) for i in range(len(ctx) - 4) if ctx[i + 2] == v.COLON}
        assert len(pairs) == 40 // 8  # keys distinct, all listed
        assert ctx.count(v.FILL) == 40 - 6 * len(pairs)
        for q in [i for i, tok in enumerate(x) if tok == v.QUERY]:
            key = (x[q + 1], x[q + 2])
            assert pairs[key] == (x[q + 3], x[q + 4])
            assert (y[q + 2], y[q + 3]) == pairs[key]  # position of k2 predicts v1, of v1 predicts v2
        assert sum(lbl != -100 for lbl in y) == 2 * 3


def test_sequence_metrics_on_hand_built_predictions():
    t = CopyTask(train_min=4, train_max=4, test_lengths=(4,), n_eval=10, eval_batch=4)
    x, y = t.eval_set(4)
    perfect = t.score(Oracle(y, t.vocab_size), x, y, "cpu")
    assert perfect == {"exact_match": 1.0, "token_accuracy": 1.0}
    wrong = y.clone()
    wrong[:5, 6] = (wrong[:5, 6] + 1) % t.vocab.A  # one wrong target token in half the rows
    m = t.score(Oracle(wrong, t.vocab_size), x, y, "cpu")
    assert m["exact_match"] == 0.5
    assert m["token_accuracy"] == pytest.approx(1 - 5 / (10 * 5))  # 4 symbols + EOS per row


def test_mqmtar_metrics_on_hand_built_predictions():
    t = MQMTARTask(train_min=16, train_max=16, test_lengths=(16,), n_queries=2, n_eval=4, eval_batch=4)
    x, y = t.eval_set(16)
    assert t.score(Oracle(y, t.vocab_size), x, y, "cpu") == {"recall": 1.0, "exact_accuracy": 1.0}
    wrong = y.clone()
    first = (y[0] != -100).nonzero()[1]  # second value token of row 0's first query
    wrong[0, first] = (y[0, first] + 1) % t.vocab.A
    m = t.score(Oracle(wrong, t.vocab_size), x, y, "cpu")
    assert m == {"recall": 7 / 8, "exact_accuracy": 3 / 4}


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
