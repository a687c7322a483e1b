"""ICLL (RegBench): generator properties over many seeds, data format and loss mask,
the fixed training set, disjoint splits, the metrics and n-gram baselines on hand-built
cases with hand-computed values, and a model smoke check."""

import itertools
import random

import pytest
import torch

from kernelattn.tasks.base import Task
from kernelattn.tasks.icll import (DFA, MAX_LEN, N_LETTERS, PAD, SEP, VOCAB_SIZE, ICLLTask, canonical_dfa, decode,
                                   greedy_accuracy, is_minimal, minimize_dfa, ngram_probs, random_dfa,
                                   random_raw_dfa, sample_sequence, split_sequence, total_variation,
                                   true_distribution, valid_next_masks)

A, B, C = 0, 1, 2  # letters a, b, c

# 0 -a-> 1, 0 -b-> 2;  1 -c-> 0;  2 -a-> 1, 2 -c-> 0: out-sets all differ (minimal), no self-loops
HAND = DFA((((A, 1), (B, 2)), ((C, 0),), ((A, 1), (C, 0))))


@pytest.fixture(scope="module")
def task():
    return ICLLTask(seq_len=256, seed=0, train_size=100, n_val=20, n_test=30)


def _letters(word: str) -> list[int]:
    return [ord(c) - ord("a") for c in word]


# -- the generator -------------------------------------------------------------------------


def test_raw_automata_follow_regbench_over_many_seeds():
    sizes, used, degrees = set(), set(), set()
    for seed in range(2000):
        d = random_raw_dfa(random.Random(seed))
        sizes.add(d.n_states)
        used |= set(d.alphabet)
        for s, row in enumerate(d.transitions):
            letters, targets = [a for a, _ in row], [t for _, t in row]
            degrees.add(len(row))
            assert s not in targets  # no self-loops
            assert len(set(targets)) == len(targets)  # distinct targets per state
            assert len(set(letters)) == len(letters) and all(0 <= a < N_LETTERS for a in letters)
            assert all(0 <= t < d.n_states for t in targets)
    assert sizes == set(range(4, 13)) and degrees == {1, 2, 3}
    assert used == set(range(N_LETTERS))  # every one of the 18 letters occurs


def test_letters_come_from_the_alphabet_and_bad_sizes_are_refused():
    assert all(set(random_raw_dfa(random.Random(s), n_letters=4).alphabet) <= {0, 1, 2, 3} for s in range(50))
    with pytest.raises(ValueError, match="max_out"):
        random_raw_dfa(random.Random(0), min_states=3, max_out=3)  # a state needs 3 other states
    with pytest.raises(ValueError, match="min_letters"):
        random_raw_dfa(random.Random(0), min_letters=19)


def test_minimised_automata_are_minimal_canonical_and_same_language():
    words = [list(w) for k in range(1, 5) for w in itertools.product(range(6), repeat=k)]
    for seed in range(200):
        raw = random_raw_dfa(random.Random(seed), n_letters=6, min_letters=3)
        d = minimize_dfa(raw)
        assert is_minimal(d) and canonical_dfa(d) == d and 1 <= d.n_states <= raw.n_states
        assert all(1 <= len(row) <= 3 for row in d.transitions)
        assert all(raw.accepts(w) == d.accepts(w) for w in words)
    # random_dfa is the minimised raw draw
    assert random_dfa(random.Random(7)) == minimize_dfa(random_raw_dfa(random.Random(7)))


def test_minimise_merges_equivalent_states():
    # 1 and 2 read only c back to 0: one state
    d = minimize_dfa(DFA((((A, 1), (B, 2)), ((C, 0),), ((C, 0),))))
    assert d == DFA((((A, 1), (B, 1)), ((C, 0),)))
    # a 2-cycle on a is one state with a self-loop (RegBench's minimisation does this too)
    assert minimize_dfa(DFA((((A, 1),), ((A, 0),)))) == DFA((((A, 0),),))
    # unreachable state 2 dropped
    assert minimize_dfa(DFA((((A, 1),), ((B, 0),), ((C, 0),)))) == DFA((((A, 1),), ((B, 0),)))
    assert is_minimal(HAND) and minimize_dfa(HAND) == HAND


def test_signature_is_invariant_to_state_numbering():
    swapped = DFA((((A, 2), (B, 1)), ((A, 2), (C, 0)), ((C, 0),)))  # HAND with states 1 and 2 swapped
    assert swapped.signature == HAND.signature and canonical_dfa(swapped) == HAND


def test_sample_sequence_is_in_language():
    for seed in range(50):
        seq = sample_sequence(HAND, random.Random(seed), 3, 5, 1, 4)
        assert seq[0] != SEP and seq[-1] != SEP  # no leading or final separator
        words = decode(seq).split("|")
        assert 3 <= len(words) <= 5 and all(1 <= len(w) <= 4 for w in words)
        assert all(HAND.accepts(_letters(w)) for w in words)


def test_split_sequence_masks_separators():
    x, y = split_sequence([A, C, SEP, B, A, C, SEP, B])
    assert x == [A, C, SEP, B, A, C, SEP]
    assert y == [C, -100, B, A, C, -100, B]


# -- task format ---------------------------------------------------------------------------


def test_satisfies_task_protocol(task):
    assert isinstance(task, Task)
    assert task.vocab_size == VOCAB_SIZE == 20 and task.seq_len == 256 and task.name == "icll"


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_sample_format_and_loss_mask(task, split):
    x, y = task.sample(split, 32, torch.Generator().manual_seed(3))
    assert x.shape == y.shape == (32, 256) and x.dtype == y.dtype == torch.long
    assert ((x >= 0) & (x < VOCAB_SIZE)).all() and (x[:, 0] < N_LETTERS).all()
    real = x != PAD
    n = real.sum(1)
    for i in range(32):
        k = int(n[i])
        assert real[i, :k].all() and not real[i, k:].any()  # right padding only
        nxt = x[i, 1:k]
        # targets: the next token, -100 where it is | and on padding
        assert (y[i, :k - 1] == torch.where(nxt == SEP, -100, nxt)).all()
        assert 0 <= y[i, k - 1] < N_LETTERS and (y[i, k:] == -100).all()  # the final letter, then nothing
        words = decode(torch.cat([x[i, :k], y[i, k - 1:k]])).split("|")
        assert 10 <= len(words) <= 19 and all(1 <= len(w) <= 12 for w in words)
    assert not (y == SEP).any()


def test_string_length_fits_seq_len():
    assert ICLLTask(seq_len=64, n_val=2, n_test=2).lengths == (1, 2)  # 19 * 2 + 18 - 1 = 55 <= 64
    assert ICLLTask(seq_len=256, n_val=2, n_test=2).lengths == (1, 12)  # 19 * 12 + 17 = 245
    assert ICLLTask(seq_len=948, n_val=2, n_test=2).lengths == (1, MAX_LEN)  # RegBench's 1..49 fits
    assert ICLLTask(seq_len=2000, n_val=2, n_test=2).lengths == (1, MAX_LEN)
    t = ICLLTask(seq_len=64, n_val=2, n_test=2, train_size=64)
    x, _ = t.sample("train", 64, torch.Generator().manual_seed(0))
    assert x.shape == (64, 64)
    for bad in (dict(seq_len=30), dict(seq_len=256, max_len=20), dict(not_an_option=1), dict(max_out=4),
                dict(train_size=0)):
        with pytest.raises(ValueError):
            ICLLTask(**bad)
    with pytest.raises(ValueError):
        t.sample("dev", 1, torch.Generator())


def test_training_set_is_fixed(task):
    x, y = task.data("train")
    assert x.shape == (task.train_size, 256)
    assert torch.equal(task.data("train")[0], x)
    # batches are rows of the fixed set: every sampled row is one of the train_size sequences
    rows = {tuple(r.tolist()) for r in x}
    for s in range(5):
        xb, yb = task.sample("train", 16, torch.Generator().manual_seed(s))
        assert all(tuple(r.tolist()) in rows for r in xb)
    # one sequence per automaton, in its language
    for i in range(0, task.train_size, 17):
        words = decode(torch.cat([x[i][x[i] != PAD], y[i][(y[i] != -100)][-1:]])).split("|")
        assert all(task.train_dfa(i).accepts(_letters(w)) for w in words)


def test_sequences_follow_their_automaton(task):
    x, valid, scored = task.eval_set("val")
    _, y = task.data("val")
    for row, dfa in zip(x, task.val_dfas):
        text = decode(row[row != PAD])
        assert all(dfa.accepts(_letters(w)) for w in text.split("|"))
    # every letter target lies in the support of the true distribution; every real position is scored
    tgt = y.clamp_min(0)
    assert valid.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)[y != -100].all()
    assert (scored == (x != PAD)).all()
    assert not valid[..., SEP].any() and not valid[..., PAD].any()


def test_same_seed_same_data_different_seed_different():
    a = ICLLTask(seed=5, train_size=50, n_val=5, n_test=5)
    b = ICLLTask(seed=5, train_size=50, n_val=5, n_test=5)
    c = ICLLTask(seed=6, train_size=50, n_val=5, n_test=5)
    for split in ("train", "val", "test"):
        xa, ya = a.sample(split, 8, torch.Generator().manual_seed(1))
        xb, yb = b.sample(split, 8, torch.Generator().manual_seed(1))
        xc, _ = c.sample(split, 8, torch.Generator().manual_seed(1))
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and not torch.equal(xa, xc)
    assert torch.equal(a.eval_set("test")[0], b.eval_set("test")[0])
    # a larger training set keeps the first automata and the held-out sets
    big = ICLLTask(seed=5, train_size=80, n_val=5, n_test=5)
    assert torch.equal(big.data("train")[0][:50], a.data("train")[0])
    assert torch.equal(big.eval_set("test")[0], a.eval_set("test")[0])


def test_train_val_test_languages_are_disjoint(task):
    test = {d.signature for d in task.test_dfas}
    val = {d.signature for d in task.val_dfas}
    train = {task.train_dfa(i).signature for i in range(task.train_size)}
    assert len(task.test_dfas) == task.n_test and len(task.val_dfas) == task.n_val
    assert not (test & val) and not (train & test) and not (train & val)


# -- true next-letter distribution and metrics ---------------------------------------------

# strings "ac", "bac", "b": the model reads a c | b a c | and predicts c | b a c | b
HAND_INPUT = [A, C, SEP, B, A, C, SEP]
HAND_VALID = [{C}, {A, B}, {A, B}, {A, C}, {C}, {A, B}, {A, B}]


def _hand_masks(pad: int = 0):
    valid, scored = valid_next_masks(HAND, HAND_INPUT + [PAD] * pad)
    return valid.unsqueeze(0), scored.unsqueeze(0)


def test_valid_next_masks_on_hand_dfa():
    valid, scored = valid_next_masks(HAND, HAND_INPUT + [PAD, PAD])
    # after "ac" the string may end (target |), yet q is over the letters that continue it
    assert [set(torch.nonzero(v).flatten().tolist()) for v in valid] == HAND_VALID + [set(), set()]
    assert scored.tolist() == [True] * 7 + [False, False]  # every real position, | targets included
    q = true_distribution(valid)
    assert torch.allclose(q[3], torch.tensor([0.5 if i in (A, C) else 0.0 for i in range(VOCAB_SIZE)],
                                             dtype=torch.float64))
    assert q[8].sum() == 0
    with pytest.raises(ValueError):
        valid_next_masks(HAND, [C])  # c is not a transition of the start state


def test_perfect_predictor_scores_one_and_zero():
    valid, scored = _hand_masks(pad=3)
    q = true_distribution(valid)
    assert greedy_accuracy(q, valid, scored) == 1.0
    assert total_variation(q, valid, scored) == pytest.approx(0.0, abs=1e-12)


def test_always_separator_scores_zero():
    valid, scored = _hand_masks()
    sep = torch.nn.functional.one_hot(torch.full((1, 7), SEP), VOCAB_SIZE).float()
    assert greedy_accuracy(sep, valid, scored) == 0.0
    assert total_variation(sep, valid, scored) == pytest.approx(1.0)


def test_mass_off_the_letters_counts_against_the_model():
    valid, scored = _hand_masks()
    q = true_distribution(valid).float()
    half = 0.5 * q + 0.5 * torch.nn.functional.one_hot(torch.tensor(PAD), VOCAB_SIZE)
    # no renormalisation: TVD 1/2 everywhere; argmax is PAD where q splits over two letters
    # (0.25 each), and the letter where q is a point mass (0.5 tie with PAD goes to the letter)
    assert total_variation(half, valid, scored) == pytest.approx(0.5)
    assert greedy_accuracy(half, valid, scored) == pytest.approx(2 / 7)


def test_uniform_over_everything_known_values():
    valid, scored = _hand_masks()
    uniform = torch.full(valid.shape, 1 / VOCAB_SIZE)
    # TVD to a uniform q over k letters: 1 - k/20 (k = 1, 2, 2, 2, 1, 2, 2)
    assert total_variation(uniform, valid, scored) == pytest.approx((2 * 0.95 + 5 * 0.9) / 7)
    # ties go to the lowest id, a: valid at 5 of the 7 positions
    assert greedy_accuracy(uniform, valid, scored) == pytest.approx(5 / 7)


def test_metrics_on_hand_built_predictions():
    valid = torch.zeros(2, VOCAB_SIZE, dtype=torch.bool)
    valid[0, [A, B]] = True
    valid[1, [C]] = True
    probs = torch.zeros(2, VOCAB_SIZE)
    probs[0, A] = 1.0  # point mass on a valid letter: right, TVD 1/2
    probs[1, A], probs[1, C] = 0.75, 0.25  # argmax a is invalid, TVD 3/4
    assert greedy_accuracy(probs, valid) == 0.5
    assert total_variation(probs, valid) == pytest.approx((0.5 + 0.75) / 2)
    assert total_variation(probs, valid, torch.tensor([False, True])) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="same shape"):
        total_variation(probs[:, :5], valid)


# -- n-gram baselines ----------------------------------------------------------------------


def _dist(**probs):
    out = torch.zeros(VOCAB_SIZE, dtype=torch.float64)
    for k, v in probs.items():
        out["abcdefghijklmnopqr".index(k)] = v
    return out


def test_bigram_on_hand_sequence():
    # a b | a c | a: counts over the strings read so far, each padded with one start symbol
    p = ngram_probs(torch.tensor([A, B, SEP, A, C, SEP, A]), 2)
    expect = [_dist(a=1),  # only a seen; "a a" unseen: unigram, renormalised
              _dist(a=0.5, b=0.5),  # "b ." unseen: unigrams a 1, b 1
              _dist(a=0.5, b=0.5),  # start: "_ a" 1 of count(_) 2; the rest to b
              _dist(a=0.5, b=0.5),  # "a b" 1 of count(a) 2; the rest to a
              _dist(a=0.5, b=0.25, c=0.25),  # "c ." unseen: unigrams a 2, b 1, c 1
              _dist(a=2 / 3, b=1 / 6, c=1 / 6),  # "_ a" 2 of count(_) 3; 1/3 split b, c by unigrams
              _dist(a=1 / 3, b=1 / 3, c=1 / 3)]  # "a b", "a c" 1 each of count(a) 3; 1/3 to a
    for t, e in enumerate(expect):
        assert torch.allclose(p[t], e), t
    assert p.shape == (7, VOCAB_SIZE) and (p[:, SEP] == 0).all() and (p[:, PAD] == 0).all()


def test_ngram_mass_can_be_below_one():
    # a b a a: at the last a, "a b" and "a a" were both seen (1 of count(a) 3 each) and no
    # seen letter is left to back off to: RegBench leaves the 1/3 unassigned
    p = ngram_probs(torch.tensor([A, B, A, A]), 2)
    assert torch.allclose(p[3], _dist(a=1 / 3, b=1 / 3))


def test_trigram_on_hand_sequence():
    p = ngram_probs(torch.tensor([A, B, SEP, A, B, SEP, A]), 3)
    assert torch.allclose(p[6], _dist(a=1 / 3, b=2 / 3))  # "_ a b" 2 of count(_ a) 3; 1/3 backs off to a
    # "a b" then nothing seen after it; "b" then nothing: unigrams (a 2, b 2) renormalised
    assert torch.allclose(p[4], _dist(a=0.5, b=0.5))
    # at a string start: "_ _ a" 1 of count(_ _) 2 (the current, empty string counts); b, unseen
    # after "_ _", gets the 1/2 left
    assert torch.allclose(p[2], _dist(a=0.5, b=0.5))


def test_ngram_ignores_padding_and_batches():
    a = torch.tensor([A, B, SEP, A, B, SEP, PAD, PAD, PAD])
    b = torch.tensor([C, C, SEP, C, SEP, PAD, PAD, PAD, PAD])
    both = ngram_probs(torch.stack([a, b]), 3)
    assert torch.allclose(both[0], ngram_probs(a, 3)) and torch.allclose(both[1], ngram_probs(b, 3))
    assert (both[0, 6:] == 0).all() and (both[1, 5:] == 0).all()
    with pytest.raises(ValueError):
        ngram_probs(a, 4)


# -- the task's records --------------------------------------------------------------------


def test_baselines_beat_chance_and_always_separator_scores_zero(task):
    recs = task.baseline_metrics()
    pairs = {(m, k) for m in ("2gram", "3gram") for k in ("accuracy", "tvd")}
    assert {(r["method"], r["metric"]) for r in recs} == pairs
    for r in recs:
        assert 0 <= r["value"] <= 1 and r["train_size"] == 100
    acc = {r["method"]: r["value"] for r in recs if r["metric"] == "accuracy"}
    assert acc["3gram"] > 0.7 and acc["2gram"] > 0.6
    x, valid, _ = task.eval_set("test")
    sep = torch.nn.functional.one_hot(torch.full(x.shape, SEP), VOCAB_SIZE).float()
    assert task.score(sep, "test") == {"accuracy": 0.0, "tvd": pytest.approx(1.0)}
    assert task.score(true_distribution(valid), "test") == {"accuracy": 1.0, "tvd": pytest.approx(0.0, abs=1e-12)}


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
