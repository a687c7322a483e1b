"""ICLL (RegBench): data format, determinism, disjoint automata, true distributions,
n-gram baselines and metrics on hand-built cases, and a model smoke check."""

import random

import pytest
import torch

from kernelattn.tasks.base import Task
from kernelattn.tasks.icll import (BOS, DFA, N_OUTPUTS, PAD, SEP, VOCAB_SIZE, ICLLTask, canonical_dfa, decode,
                                   greedy_accuracy, is_minimal, ngram_probs, random_dfa, sample_sequence,
                                   total_variation, true_distribution, valid_next_masks)

A, B, C = 0, 1, 2  # letters a, b, c

# 0 -a-> 1, 0 -b-> 2;  1 -c-> 0;  2 -a-> 2, 2 -c-> 1   (out-sets all differ: minimal)
HAND = DFA((((A, 1), (B, 2)), ((C, 0),), ((A, 2), (C, 1))))


@pytest.fixture(scope="module")
def task():
    return ICLLTask(seq_len=256, seed=0, train_size=100, n_val=20, n_test=30)


def _strings(row):
    """The strings of one input row (between BOS/SEP, up to the padding)."""
    text = decode(row).rstrip(".")
    assert text[0] == "^" and text[-1] == "|"
    return text[1:-1].split("|")


# -- format --------------------------------------------------------------------------------


def test_satisfies_task_protocol(task):
    assert isinstance(task, Task)
    assert task.vocab_size == VOCAB_SIZE == 23 and task.seq_len == 256 and task.name == "icll"


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_sample_format(task, split):
    x, y = task.sample(split, 32, torch.Generator().manual_seed(3))
    assert x.shape == y.shape == (32, 256) and x.dtype == y.dtype == torch.long
    assert (x[:, 0] == BOS).all()
    assert ((x >= 0) & (x < VOCAB_SIZE)).all()
    real = x != PAD
    n = real.sum(1)
    for i in range(32):
        assert real[i, :n[i]].all() and not real[i, n[i]:].any()  # right padding only
        assert x[i, n[i] - 1] == SEP  # every string is closed by |
        assert (y[i, :n[i] - 1] == x[i, 1:n[i]]).all() and (y[i, n[i] - 1:] == -100).all()
        words = _strings(x[i, :n[i]])
        assert 10 <= len(words) <= 19
        assert all(1 <= len(w) <= 12 for w in words)
    assert not ((x == BOS)[:, 1:]).any()


def test_string_length_fits_short_seq_len():
    t = ICLLTask(seq_len=64, n_val=2, n_test=2)
    assert t.lengths == (1, 2)  # BOS + 19 * (2 + 1) = 58 <= 64
    x, _ = t.sample("train", 64, torch.Generator().manual_seed(0))
    assert x.shape == (64, 64) and (x[:, 0] == BOS).all()
    with pytest.raises(ValueError):
        ICLLTask(seq_len=30)
    with pytest.raises(ValueError):
        ICLLTask(seq_len=256, max_len=20)
    with pytest.raises(ValueError):
        ICLLTask(not_an_option=1)
    with pytest.raises(ValueError):
        t.sample("dev", 1, torch.Generator())


def test_sequences_follow_their_automaton(task):
    x, valid, scored = task.eval_set("val")
    for row, dfa in zip(x, task.val_dfas):
        assert all(dfa.accepts(w) for w in [[ord(c) - ord("a") for c in s] for s in _strings(row)])
    # every scored target lies in the support of the true distribution
    tgt = torch.cat([x[:, 1:], torch.full_like(x[:, :1], PAD)], 1)
    assert valid.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)[scored].all()
    assert (scored == (tgt != PAD)).all()


# -- automata ------------------------------------------------------------------------------


def test_random_dfas_are_reachable_minimal_and_in_range():
    rng = random.Random(0)
    for _ in range(200):
        d = random_dfa(rng)
        assert 4 <= d.n_states <= 12 and canonical_dfa(d) == d and is_minimal(d)
        assert all(1 <= len(row) <= 3 for row in d.transitions)
        assert len(d.alphabet) <= min(d.n_states, 20) and all(0 <= a < 20 for a in d.alphabet)


def test_signature_is_invariant_to_state_numbering():
    # HAND with states 1 and 2 swapped
    swapped = DFA((((A, 2), (B, 1)), ((A, 1), (C, 2)), ((C, 0),)))
    assert swapped.signature == HAND.signature
    assert canonical_dfa(swapped) == HAND


def test_is_minimal():
    assert is_minimal(HAND)
    # states 1 and 2 both read only c back to 0: same future
    assert not is_minimal(DFA((((A, 1), (B, 2)), ((C, 0),), ((C, 0),))))
    # 1 and 2 loop on a into each other: indistinguishable
    assert not is_minimal(DFA((((A, 1),), ((A, 2),), ((A, 1),))))


# -- determinism and disjointness ----------------------------------------------------------


def test_same_seed_same_data_different_seed_different():
    a = ICLLTask(seed=5, train_size=50, n_val=5, n_test=5)
    b = ICLLTask(seed=5, train_size=50, n_val=5, n_test=5)
    c = ICLLTask(seed=6, train_size=50, n_val=5, n_test=5)
    for split in ("train", "val", "test"):
        xa, ya = a.sample(split, 8, torch.Generator().manual_seed(1))
        xb, yb = b.sample(split, 8, torch.Generator().manual_seed(1))
        xc, _ = c.sample(split, 8, torch.Generator().manual_seed(1))
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not torch.equal(xa, xc)
    assert torch.equal(a.eval_set("test")[0], b.eval_set("test")[0])
    assert not torch.equal(a.eval_set("test")[0], c.eval_set("test")[0])
    assert [d.signature for d in a.test_dfas] == [d.signature for d in b.test_dfas]
    assert [d.signature for d in a.test_dfas] != [d.signature for d in c.test_dfas]
    x1, _ = a.sample("train", 8, torch.Generator().manual_seed(1))
    x2, _ = a.sample("train", 8, torch.Generator().manual_seed(2))
    assert not torch.equal(x1, x2)


def test_train_val_test_automata_are_disjoint(task):
    test = {d.signature for d in task.test_dfas}
    val = {d.signature for d in task.val_dfas}
    train = {task.train_dfa(i).signature for i in range(task.train_size)}
    assert len(test) == task.n_test and len(val) == task.n_val
    assert not (test & val) and not (train & test) and not (train & val)


def test_disjointness_when_languages_are_scarce():
    # one-state automata: a single self-loop letter, so only 20 languages exist
    t = ICLLTask(seq_len=64, train_size=200, n_val=6, n_test=8, min_states=1, max_states=1)
    held = {d.signature for d in t.test_dfas + t.val_dfas}
    assert len(held) == 14
    train = {t.train_dfa(i).signature for i in range(t.train_size)}
    assert not (train & held) and len(train) == 6  # the remaining languages, all drawn
    with pytest.raises(RuntimeError):
        ICLLTask(seq_len=64, n_val=1, n_test=21, min_states=1, max_states=1)


# -- true next-symbol distribution ---------------------------------------------------------


def test_valid_next_masks_on_hand_dfa():
    #         ^    a  c  b  |    b  a  c  |    .
    tokens = [BOS, A, C, B, SEP, B, A, C, SEP, PAD]
    valid, scored = valid_next_masks(HAND, tokens)
    expect = [{A, B}, {C, SEP}, {A, B, SEP}, {A, C, SEP}, {A, B}, {A, C, SEP}, {A, C, SEP}, {C, SEP}, {A, B},
              set()]
    assert [set(torch.nonzero(v).flatten().tolist()) for v in valid] == expect
    assert scored.tolist() == [True] * 8 + [False, False]
    q = true_distribution(valid)
    assert torch.allclose(q[1], torch.tensor([0.5 if i in (C, SEP) else 0.0 for i in range(VOCAB_SIZE)],
                                             dtype=torch.float64))
    assert q[9].sum() == 0
    with pytest.raises(ValueError):
        valid_next_masks(HAND, [BOS, C])  # c is not a transition of the start state


def test_sample_sequence_is_in_language():
    rng = random.Random(1)
    seq = sample_sequence(HAND, rng, 3, 5, 1, 4)
    assert seq[0] == BOS and seq[-1] == SEP
    words = decode(seq)[1:-1].split("|")
    assert 3 <= len(words) <= 5 and all(1 <= len(w) <= 4 for w in words)
    assert all(HAND.accepts([ord(c) - ord("a") for c in w]) for w in words)


# -- n-gram baselines ----------------------------------------------------------------------


def _dist(**probs):
    out = torch.zeros(N_OUTPUTS, dtype=torch.float64)
    for k, v in probs.items():
        out["abcdefghijklmnopqrst".index(k) if k != "sep" else SEP] = v
    return out


def test_bigram_counts_and_backoff():
    #         0    1  2  3  4  5    6
    tokens = torch.tensor([BOS, A, B, A, C, SEP, A])
    p = ngram_probs(tokens, 2)
    assert p.shape == (7, N_OUTPUTS)
    assert torch.allclose(p[0], torch.full((N_OUTPUTS,), 1 / N_OUTPUTS, dtype=torch.float64))  # nothing seen
    assert torch.allclose(p[1], _dist(a=1))  # no earlier a: back off to outputs seen so far (a)
    assert torch.allclose(p[2], _dist(a=0.5, b=0.5))  # no earlier b: seen {a, b}
    assert torch.allclose(p[3], _dist(b=1))  # a was followed by b
    assert torch.allclose(p[6], _dist(b=0.5, c=0.5))  # a followed by b, then by c
    assert torch.allclose(p.sum(-1), torch.ones(7, dtype=torch.float64))


def test_trigram_counts_and_backoff():
    #         0    1  2  3  4  5  6  7
    tokens = torch.tensor([[BOS, A, B, A, C, A, B, A]])
    p3 = ngram_probs(tokens, 3)[0]
    p2 = ngram_probs(tokens, 2)[0]
    assert torch.allclose(p2[7], _dist(b=2 / 3, c=1 / 3))
    assert torch.allclose(p3[7], _dist(c=1))  # (b, a) was followed by c
    assert torch.allclose(p3[5], _dist(b=0.5, c=0.5))  # (c, a) unseen before t=5: the 2-gram
    assert torch.allclose(p3[3], p2[3])  # (b, a) unseen at t=3: backs off to the 2-gram


def test_ngram_ignores_padding_and_batches():
    a = torch.tensor([BOS, A, B, SEP, A, B, SEP, PAD, PAD])
    b = torch.tensor([BOS, C, C, SEP, C, SEP, PAD, PAD, PAD])
    both = ngram_probs(torch.stack([a, b]), 3)
    assert torch.allclose(both[0], ngram_probs(a, 3)) and torch.allclose(both[1], ngram_probs(b, 3))
    assert torch.allclose(both[0, 4], _dist(b=1))  # (|, a) unseen: the 2-gram a -> b
    assert torch.allclose(both[0, 5], _dist(sep=1))  # (a, b) was followed by |
    assert torch.allclose(both[1, 3], _dist(c=2 / 3, sep=1 / 3))  # (c, |) and | unseen: outputs so far


# -- metrics -------------------------------------------------------------------------------


def _hand_masks():
    valid, scored = valid_next_masks(HAND, [BOS, A, C, B, SEP, B, A, C, SEP, PAD])
    return valid.unsqueeze(0), scored.unsqueeze(0)


def test_perfect_predictor_scores_one_and_zero():
    valid, scored = _hand_masks()
    q = true_distribution(valid)
    assert greedy_accuracy(q, valid, scored) == 1.0
    assert total_variation(q, valid, scored) == pytest.approx(0.0, abs=1e-12)
    # mass on BOS / PAD is dropped before renormalising
    noisy = 0.5 * q.float() + 0.5 * torch.nn.functional.one_hot(torch.tensor(BOS), VOCAB_SIZE)
    assert total_variation(noisy, valid, scored) == pytest.approx(0.0, abs=1e-6)


def test_uniform_over_everything_known_values():
    valid, scored = _hand_masks()
    uniform = torch.full(valid.shape, 1 / VOCAB_SIZE)
    k = valid[0, :8].sum(-1).double()  # support sizes of the 8 scored positions
    # restricted to the 21 outputs, uniform is 1/21: TVD = 1 - k/21 at each position
    assert total_variation(uniform, valid, scored) == pytest.approx((1 - k / N_OUTPUTS).mean().item(), abs=1e-12)
    # ties go to the lowest id, a: valid exactly where a is
    assert greedy_accuracy(uniform, valid, scored) == pytest.approx(valid[0, :8, A].double().mean().item())


def test_metrics_on_hand_built_predictions():
    valid = torch.zeros(2, VOCAB_SIZE, dtype=torch.bool)
    valid[0, [A, B]] = True
    valid[1, [C]] = True
    probs = torch.zeros(2, VOCAB_SIZE)
    probs[0, A] = 1.0  # point mass on a valid symbol: right, TVD 1/2
    probs[1, A], probs[1, C] = 0.75, 0.25  # argmax a is invalid, TVD 3/4
    assert greedy_accuracy(probs, valid) == 0.5
    assert total_variation(probs, valid) == pytest.approx((0.5 + 0.75) / 2)
    assert total_variation(probs, valid, torch.tensor([False, True])) == pytest.approx(0.75)


def test_baselines_and_model_records(task):
    recs = task.baseline_metrics()
    pairs = {(m, k) for m in ("2gram", "3gram") for k in ("accuracy", "tvd")}
    assert {(r["method"], r["metric"]) for r in recs} == pairs
    for r in recs:
        assert 0 <= r["value"] <= 1 and r["train_size"] == 100
    acc = {r["method"]: r["value"] for r in recs if r["metric"] == "accuracy"}
    assert acc["3gram"] > 0.5  # in-context counts already beat chance on these automata


def test_tiny_model_evaluate_and_final_metrics_in_unit_interval(task):
    from kernelattn.models import build_model
    torch.manual_seed(0)
    model = build_model("gpt", vocab_size=task.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=task.seq_len)
    model.eval()
    m = task.evaluate(model, torch.device("cpu"))
    assert set(m) == {"icll_acc", "icll_tvd"} and all(0 <= v <= 1 for v in m.values())
    recs = task.final_metrics(model, torch.device("cpu"))
    assert [r["metric"] for r in recs] == ["accuracy", "tvd"]
    assert all(0 <= r["value"] <= 1 and r["train_size"] == 100 for r in recs)


def _ngram_reference(tokens, n):
    """Plain-loop in-context n-gram with the documented back-off."""
    tokens = [int(t) for t in tokens]
    rows = []
    for t in range(len(tokens)):
        counts = [0.0] * N_OUTPUTS
        for order in range(n, 1, -1):
            ctx = tuple(tokens[t - order + 2:t + 1])
            if t - order + 2 < 0:
                continue
            for j in range(order - 2, t):
                if tuple(tokens[j - order + 2:j + 1]) == ctx and tokens[j + 1] < N_OUTPUTS:
                    counts[tokens[j + 1]] += 1
            if sum(counts):
                break
        if not sum(counts):
            for tok in tokens[1:t + 1]:
                if tok < N_OUTPUTS:
                    counts[tok] += 1
        if not sum(counts):
            counts = [1.0] * N_OUTPUTS
        rows.append([c / sum(counts) for c in counts])
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("n", [2, 3])
def test_ngram_matches_plain_loop_reference(task, n):
    x = task.eval_set("val")[0][:3, :120]
    p = ngram_probs(x, n)
    for i in range(3):
        assert torch.allclose(p[i], _ngram_reference(x[i], n))
