"""MQMTAR: the paper's layout, its options, its scoring, and long-length evaluation batches."""

import random

import pytest
import torch

from kernelattn.tasks import MQMTARTask, build_task


class Oracle(torch.nn.Module):
    """A 'model' whose argmax is a fixed answer sheet; records the batch sizes it saw."""

    def __init__(self, answers: torch.Tensor, vocab: int):
        super().__init__()
        self.answers, self.vocab, self.i, self.batches = answers, vocab, 0, []

    def forward(self, x):
        ans = self.answers[self.i:self.i + len(x)].clamp_min(0)
        self.i += len(x)
        self.batches.append(len(x))
        return torch.nn.functional.one_hot(ans, self.vocab).float()


def parse(t: MQMTARTask, x: list[int], y: list[int]):
    """Split one example into its listed pairs, source queries and target triples."""
    v = t.vocab
    sep = x.index(v.SEP)
    q = t.n_queries
    ctx = x[1:sep - q * (1 + t.key_len)]
    pairs = {}
    for i, tok in enumerate(ctx):
        if tok == v.COLON:
            pairs[tuple(ctx[i - t.key_len:i])] = tuple(ctx[i + 1:i + 1 + t.value_len])
    queries = x[sep - q * (1 + t.key_len):sep]
    target = x[sep + 1:] + [y[-1]]  # teacher-forced input after SEP, plus the final label (EOS)
    return ctx, pairs, queries, target


@pytest.mark.parametrize("L", [32, 47, 64, 200])
def test_layout_follows_the_paper(L):
    t = MQMTARTask(train_min=32, train_max=64, test_lengths=(64,), alphabet=16)
    v = t.vocab
    for seed in range(10):
        x, y = t.example(L, random.Random(seed))
        assert len(x) == len(y) == t.total_length(L) and x[0] == v.BOS
        ctx, pairs, queries, target = parse(t, x, y)
        k = int(L * 0.8 // 6)  # pairs fill 80% of the context, 6 tokens per pair with its filler
        assert len(pairs) == t.n_pairs(L) == k and len(ctx) == k * (L // k) == t.context_length(L)
        assert len(set(pairs.values())) == k  # values distinct within the sequence
        assert ctx.count(v.FILL) == len(ctx) - 5 * k
        for s in range(k):  # one unit per segment of L // k tokens
            seg = ctx[s * (L // k):(s + 1) * (L // k)]
            assert seg.count(v.COLON) == 1 and seg[-1] == v.FILL
        # source queries "? k1 k2", target triples "? v1 v2", then EOS
        for i in range(t.n_queries):
            qk = queries[3 * i:3 * i + 3]
            tv = target[3 * i:3 * i + 3]
            assert qk[0] == v.QUERY and tv[0] == v.QUERY
            assert pairs[tuple(qk[1:])] == tuple(tv[1:])
        assert target[-1] == v.EOS and len(target) == 3 * t.n_queries + 1
        # loss on everything after SEP: the markers, the values and EOS
        sep = x.index(v.SEP)
        assert all(lbl == -100 for lbl in y[:sep]) and y[sep:] == target


def test_paper_settings():
    t = MQMTARTask(alphabet=256, dictionary_size=10_000, test_lengths=(64, 8192, 65536))
    assert t.vocab_size == 263  # 256 symbols + filler, ':', '?' + BOS, SEP, EOS, PAD, as the paper's data
    assert t.n_pairs(64) == 8 and t.n_pairs(8192) == 1092 and t.n_pairs(65536) == 8738
    x, y = t.example(64, random.Random(0))
    assert sum(lbl != -100 for lbl in y) == 4 * 3 + 1  # four 3-token queries and EOS
    assert int(t.scored(torch.tensor([y])).sum()) == 4 * 2  # two scored value tokens per query
    words = {tuple(x[i - 2:i]) for i, tok in enumerate(x) if tok == t.vocab.COLON}
    codes = {a + 256 * b for a, b in words}
    assert codes <= set(t.key_words) and len(t.key_words) == 10_000
    assert MQMTARTask(alphabet=256, dictionary_size=10_000).key_words == t.key_words  # fixed by the seed


def test_fixed_number_of_pairs_option():
    t = MQMTARTask(train_min=512, train_max=512, test_lengths=(512, 2048), n_pairs=80)
    assert t.n_pairs(512) == t.n_pairs(2048) == 80
    x, y = t.example(2048, random.Random(1))
    assert parse(t, x, y)[0].count(t.vocab.COLON) == 80 and len(x) == t.total_length(2048)


def test_training_batches_fit_every_training_length():
    t = MQMTARTask(train_min=32, train_max=71, test_lengths=(71,))
    assert t.total_length(64) > t.total_length(71)  # 8 pairs x 8 tokens vs 9 pairs x 7
    assert t.seq_len == max(t.total_length(n) for n in range(32, 72))
    x, y = t.sample("train", 64, torch.Generator().manual_seed(0))
    assert x.shape == (64, t.seq_len)


def test_other_key_and_value_lengths():
    t = MQMTARTask(train_min=40, train_max=40, test_lengths=(40,), key_len=1, value_len=3, n_queries=2)
    x, y = t.example(40, random.Random(2))
    ctx, pairs, queries, target = parse(t, x, y)
    assert all(len(k) == 1 and len(v) == 3 for k, v in pairs.items())
    assert target[0] == t.vocab.QUERY and len(target) == 2 * 4 + 1


def test_score_on_a_hand_built_example():
    # alphabet 4, two pairs in a 12-token context, two queries
    t = MQMTARTask(train_min=12, train_max=12, test_lengths=(12,), alphabet=4, n_pairs=2, n_queries=2)
    v = t.vocab
    Q, C, F = v.QUERY, v.COLON, v.FILL
    # context "0 1 : 2 3 _" and "1 1 : 0 2 _" (two 6-token segments), queries ? 1 1 and ? 0 1,
    # so the target is "? 0 2 ? 2 3" then EOS
    x0 = [v.BOS, 0, 1, C, 2, 3, F, 1, 1, C, 0, 2, F, Q, 1, 1, Q, 0, 1, v.SEP, Q, 0, 2, Q, 2, 3]
    assert len(x0) == t.total_length(12)
    y0 = [-100] * 19 + [Q, 0, 2, Q, 2, 3, v.EOS]
    x = torch.tensor([x0, x0])
    y = torch.tensor([y0, y0])
    pred = y.clone()
    # row 0: query 1 right; query 2 second value token wrong; the '?' and EOS predictions
    # wrong too, which must not count
    pred[0, 19], pred[0, 22], pred[0, 25], pred[0, 24] = 0, 0, 0, 1
    # row 1: both queries right, EOS wrong
    pred[1, 25] = 1
    m = t.score(Oracle(pred, t.vocab_size), x, y, "cpu")
    # queries right: row 0 1 of 2, row 1 2 of 2 -> recall 3/4; sequences all right: 1 of 2
    assert m == {"recall": 3 / 4, "exact_accuracy": 1 / 2}


def test_long_lengths_are_scored_one_or_two_sequences_at_a_time():
    t = MQMTARTask(alphabet=256, test_lengths=(64,), eval_batch=50)
    assert t.eval_batch_for(100) == 50
    assert t.eval_batch_for(16384) == 2 and t.eval_batch_for(65536) == 1
    t = MQMTARTask(test_lengths=(64,), eval_tokens=400, n_eval=5)
    x, y = t.eval_set(200)
    oracle = Oracle(y, t.vocab_size)
    assert t.score(oracle, x, y, "cpu") == {"recall": 1.0, "exact_accuracy": 1.0}
    assert oracle.batches == [1] * 5  # 400 // 226 tokens = 1 sequence per pass


def test_option_errors_name_the_fix():
    with pytest.raises(ValueError, match="kv_fraction must be in"):
        MQMTARTask(kv_fraction=1.5)
    with pytest.raises(ValueError, match="n_queries=9 exceeds"):
        MQMTARTask(train_min=32, n_queries=9)
    with pytest.raises(ValueError, match="dictionary_size=2000 exceeds"):
        MQMTARTask(alphabet=32, dictionary_size=2000)
    with pytest.raises(ValueError, match="no room for a pair"):
        MQMTARTask(train_min=16, train_max=32, n_pairs=3, n_queries=1)
    with pytest.raises(ValueError, match="unknown option"):
        build_task("mqmtar", pairs=3)
