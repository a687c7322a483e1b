"""Length generalisation: copy, reverse, sort and MQMTAR (SPEC §4).

Sequences are ``[BOS] source [SEP] target [EOS]``; the model reads all but the last token
and the next-token loss covers everything after ``[SEP]`` (every target token and EOS),
as in the paper's code. Models train on lengths in ``[train_min, train_max]`` and are
tested at fixed longer lengths. Metrics are teacher-forced argmax and follow the
paper's ``test_synthetic.py``:

* copy / reverse / sort: ``exact_match`` (every target token right) and
  ``token_accuracy``, both over the target tokens only — EOS is trained on but not
  scored (``score_eos=True`` scores it too, our former metric);
* MQMTAR: the target is one ``? v1 v2`` triple per query; ``recall`` is the fraction of
  queries whose value tokens are all right, ``exact_accuracy`` the fraction of sequences
  whose queries are all right; the ``?`` markers and EOS are trained on, not scored.

Token ids: ``0..A-1`` the alphabet, then BOS, SEP, EOS, PAD, and for MQMTAR the filler
(space), the key–value separator ``:`` and the query marker ``?`` — ``A + 4`` ids for
copy/reverse/sort and ``A + 7`` for MQMTAR, the paper's 36 and 263 at its alphabets of
32 and 256 (the paper numbers the same tokens in another order).
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

from .base import Record, pad_batch

__all__ = ["SequenceTask", "CopyTask", "ReverseTask", "SortTask", "MQMTARTask", "Vocab"]


class Vocab:
    """Token layout of the synthetic tasks: ``A`` symbols, then the special tokens.

    Args:
        alphabet: number of symbols ``A``.
        recall_markers: add MQMTAR's filler, ``:`` and ``?`` tokens.
    """

    def __init__(self, alphabet: int = 32, recall_markers: bool = False):
        if alphabet < 2:
            raise ValueError(f"alphabet must be >= 2, got {alphabet}")
        self.A = alphabet
        self.BOS, self.SEP, self.EOS, self.PAD = alphabet, alphabet + 1, alphabet + 2, alphabet + 3
        self.size = alphabet + 4
        self.FILL = self.COLON = self.QUERY = None
        if recall_markers:
            self.FILL, self.COLON, self.QUERY = alphabet + 4, alphabet + 5, alphabet + 6
            self.size = alphabet + 7


class SequenceTask:
    """Common machinery: sampling by length, teacher-forced scoring, result records.

    Args:
        train_min, train_max: range of training lengths (source length; MQMTAR: context length).
        test_lengths: lengths scored by :meth:`final_metrics`.
        alphabet: number of symbols (the paper: 32 for copy/reverse/sort).
        seed: base seed of the fixed evaluation sets.
        n_eval: sequences per test length.
        eval_batch: largest number of sequences per forward pass when scoring.
        eval_tokens: token budget of one scoring forward pass: a test length ``L`` is
            scored ``max(1, min(eval_batch, eval_tokens // L))`` sequences at a time, so
            long lengths (8k–64k tokens) run one or two sequences per pass.
        score_eos: also score the EOS prediction (copy/reverse/sort; the paper does not).
    """

    name = "sequence"
    primary = "exact_match"
    metrics = ("exact_match", "token_accuracy")

    def __init__(self, train_min: int = 8, train_max: int = 16, test_lengths=(16, 32, 64), alphabet: int = 32,
                 seed: int = 0, n_eval: int = 200, eval_batch: int = 50, eval_tokens: int = 32768,
                 score_eos: bool = False, **_unused):
        if _unused:
            raise ValueError(f"unknown option(s) for task {self.name}: {', '.join(_unused)}")
        if not 1 <= train_min <= train_max:
            raise ValueError(f"need 1 <= train_min <= train_max, got {train_min}, {train_max}")
        if eval_batch < 1 or eval_tokens < 1 or n_eval < 1:
            raise ValueError(f"n_eval, eval_batch and eval_tokens must be >= 1, got {n_eval}, {eval_batch}, "
                             f"{eval_tokens}")
        self.train_min, self.train_max = int(train_min), int(train_max)
        self.test_lengths = sorted(int(t) for t in test_lengths)
        if not self.test_lengths:
            raise ValueError("test_lengths must name at least one length")
        self.vocab = self._make_vocab(alphabet)
        self.vocab_size = self.vocab.size
        self.seed, self.n_eval, self.eval_batch, self.eval_tokens = seed, n_eval, eval_batch, eval_tokens
        self.score_eos = bool(score_eos)
        self._setup()
        # the longest training sequence (MQMTAR's length is not monotonic in n: 64 -> 8 pairs of
        # 8 tokens, 71 -> 9 pairs of 7, 63 context tokens)
        self.seq_len = max(self.total_length(n) for n in range(self.train_min, self.train_max + 1))

    def _make_vocab(self, alphabet: int) -> Vocab:
        return Vocab(alphabet)

    def _setup(self) -> None:
        """Task-specific state that :meth:`total_length` needs (runs before ``seq_len`` is set)."""

    # -- format ------------------------------------------------------------------------
    def total_length(self, n: int) -> int:
        """Model input length for source length ``n`` ([BOS] src [SEP] tgt, EOS predicted last)."""
        return 2 * n + 2

    def target_of(self, src: list[int], rng: random.Random) -> list[int]:
        raise NotImplementedError

    def source(self, n: int, rng: random.Random) -> list[int]:
        return [rng.randrange(self.vocab.A) for _ in range(n)]

    def example(self, n: int, rng: random.Random) -> tuple[list[int], list[int]]:
        """Inputs and targets (-100 where no loss) for one sequence of length ``n``."""
        v = self.vocab
        src = self.source(n, rng)
        tgt = self.target_of(src, rng)
        full = [v.BOS] + src + [v.SEP] + tgt + [v.EOS]
        x = full[:-1]
        y = [-100] * (len(src) + 1) + tgt + [v.EOS]
        return x, y

    # -- BatchSource ---------------------------------------------------------------------
    def sample(self, split: str, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        rng = random.Random(int(torch.randint(0, 2 ** 62, (1,), generator=generator)))
        seqs, tgts = zip(*(self.example(rng.randint(self.train_min, self.train_max), rng) for _ in range(n)))
        return pad_batch(list(seqs), list(tgts), self.seq_len, self.vocab.PAD)

    # -- evaluation ----------------------------------------------------------------------
    def eval_set(self, length: int, n: int | None = None) -> tuple[Tensor, Tensor]:
        """The fixed evaluation sequences at one length (same for every method and run)."""
        rng = random.Random(f"{self.name}/{self.seed}/eval/{length}")
        seqs, tgts = zip(*(self.example(length, rng) for _ in range(n or self.n_eval)))
        return pad_batch(list(seqs), list(tgts), max(map(len, seqs)), self.vocab.PAD)

    def eval_batch_for(self, tokens: int) -> int:
        """Sequences per scoring pass for sequences of ``tokens`` tokens (see ``eval_tokens``)."""
        return max(1, min(self.eval_batch, self.eval_tokens // max(tokens, 1)))

    def _predictions(self, model, x: Tensor, device):
        """Teacher-forced argmax ``(b, T)`` per scoring batch, on the CPU (forward only)."""
        bs = self.eval_batch_for(x.shape[1])
        for i in range(0, len(x), bs):
            yield i, model(x[i:i + bs].to(device)).argmax(-1).cpu()

    def scored(self, y: Tensor) -> Tensor:
        """Which target positions the metrics score: every labelled one but EOS (unless ``score_eos``)."""
        on = y != -100
        return on if self.score_eos else on & (y != self.vocab.EOS)

    @torch.no_grad()
    def score(self, model, x: Tensor, y: Tensor, device) -> dict[str, float]:
        """Teacher-forced argmax metrics of ``model`` on a fixed set ``x, y`` (both ``(n, T)``)."""
        on_all = self.scored(y)
        correct_tok = total_tok = exact = 0
        for i, pred in self._predictions(model, x, device):
            on = on_all[i:i + len(pred)]
            right = pred == y[i:i + len(pred)]
            correct_tok += int((right & on).sum())
            total_tok += int(on.sum())
            exact += int((right | ~on).all(-1).sum())
        return {"exact_match": exact / len(x), "token_accuracy": correct_tok / max(total_tok, 1)}

    def evaluate(self, model, device) -> dict[str, float]:
        m = self.score(model, *self.eval_set(self.train_max, min(self.n_eval, 100)), device)
        return {f"{self.name}_{k}": v for k, v in m.items()}

    def final_metrics(self, model, device) -> list[Record]:
        out = []
        for L in self.test_lengths:
            for k, v in self.score(model, *self.eval_set(L), device).items():
                out.append({"metric": k, "value": v, "length": L})
        return out


class CopyTask(SequenceTask):
    """Target = source."""

    name = "copy"

    def target_of(self, src, rng):
        return list(src)


class ReverseTask(SequenceTask):
    """Target = source reversed."""

    name = "reverse"

    def target_of(self, src, rng):
        return src[::-1]


class SortTask(SequenceTask):
    """Target = source sorted ascending."""

    name = "sort"

    def target_of(self, src, rng):
        return sorted(src)


class MQMTARTask(SequenceTask):
    """Multi-query multi-token associative recall, laid out as in the paper's data.

    One sequence, for context length ``L`` (the task's "length")::

        [BOS] context  ? k … ? k  [SEP]  ? v … ? v  [EOS]

    * context: ``n`` segments of ``L // n`` tokens (so ``n · (L // n) <= L`` tokens);
      segment ``i`` holds the unit ``k_i : v_i _`` (key, separator, value, one filler)
      at a random offset among filler tokens. ``n = floor(L · kv_fraction /
      (key_len + value_len + 2))`` — the unit plus one filler per pair — capped at the
      dictionary size, or the fixed ``n_pairs``.
    * keys are distinct words of ``key_len`` symbols, values distinct words of
      ``value_len`` symbols, drawn per sequence (from fixed dictionaries of
      ``dictionary_size`` words each, if given) and paired at random, so a value can
      only be recalled from the context, never memorised in the weights.
    * ``n_queries`` listed keys are drawn uniformly with replacement; the source ends
      with ``? k`` for each, the target is ``? v`` for each.

    The loss covers everything after ``[SEP]`` (markers, values, EOS); the metrics
    score the value tokens only: ``recall`` (a query is right when all its value tokens
    are) and ``exact_accuracy`` (all queries of the sequence right). With the paper's
    settings each query is 3 target tokens, ``?`` plus a 2-token value, of which the
    last 2 are scored.

    The paper's values (its data generator and ``test_synthetic.py``): ``alphabet=256,
    key_len=2, value_len=2, kv_fraction=0.8, n_queries=4, dictionary_size=10_000``,
    train lengths 32–64, test lengths 64…4096 and 8k–64k. Its data folders name the
    pair density ``num_kv-80``: that is 80% of the context (``kv_fraction=0.8``), not
    80 pairs; ``n_pairs=80`` gives a fixed 80 pairs at every length instead. One
    difference: the paper's generator draws the dictionaries anew for each data split;
    here they are drawn once per task seed (values are re-paired per sequence in both).

    Args:
        key_len, value_len: symbols per key and per value.
        kv_fraction: share of the context taken by pairs, in (0, 1] (ignored when
            ``n_pairs`` is given).
        n_pairs: a fixed number of pairs per sequence, or ``None`` for ``kv_fraction``.
        n_queries: queries per sequence.
        dictionary_size: number of key words and of value words available, or ``None``
            for every word of the alphabet.
        **kw: the options of :class:`SequenceTask` (``alphabet`` default 32).
    """

    name = "mqmtar"
    primary = "recall"
    metrics = ("recall", "exact_accuracy")

    def __init__(self, train_min: int = 32, train_max: int = 64, test_lengths=(64, 128, 256), key_len: int = 2,
                 value_len: int = 2, kv_fraction: float = 0.8, n_pairs: int | None = None, n_queries: int = 4,
                 dictionary_size: int | None = None, **kw):
        self.key_len, self.value_len, self.n_queries = int(key_len), int(value_len), int(n_queries)
        if self.key_len < 1 or self.value_len < 1:
            raise ValueError(f"key_len and value_len must be >= 1, got {key_len}, {value_len}")
        if self.n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {n_queries}")
        if not 0.0 < float(kv_fraction) <= 1.0:
            raise ValueError(f"kv_fraction must be in (0, 1], got {kv_fraction}")
        if n_pairs is not None and int(n_pairs) < 1:
            raise ValueError(f"n_pairs must be >= 1 or None (use kv_fraction), got {n_pairs}")
        if dictionary_size is not None and int(dictionary_size) < 1:
            raise ValueError(f"dictionary_size must be >= 1 or None (every word), got {dictionary_size}")
        self.kv_fraction, self.fixed_pairs = float(kv_fraction), None if n_pairs is None else int(n_pairs)
        self.dictionary_size = None if dictionary_size is None else int(dictionary_size)
        self.unit = self.key_len + self.value_len + 2  # key, ':', value, one filler
        super().__init__(train_min, train_max, test_lengths, **kw)

    def _setup(self) -> None:
        A = self.vocab.A
        if self.dictionary_size is not None:
            for what, n in (("key", self.key_len), ("value", self.value_len)):
                if self.dictionary_size > A ** n:
                    raise ValueError(f"dictionary_size={self.dictionary_size} exceeds the {A ** n} distinct {what} words "
                                     f"of {n} symbols over alphabet={A}; lower it or raise alphabet/{what}_len")
            rng = random.Random(f"{self.name}/{self.seed}/dictionary")
            self.key_words = rng.sample(range(A ** self.key_len), self.dictionary_size)
            self.value_words = rng.sample(range(A ** self.value_len), self.dictionary_size)
        else:
            self.key_words, self.value_words = range(A ** self.key_len), range(A ** self.value_len)
        shortest = min(self.train_min, *self.test_lengths)
        if self.n_pairs(shortest) < 1 or self.n_pairs(shortest) * self.unit > shortest:
            raise ValueError(f"length {shortest} has no room for a pair of {self.unit} tokens "
                             f"(key_len + value_len + 2) with n_pairs={self.fixed_pairs}, "
                             f"kv_fraction={self.kv_fraction}; "
                             "raise train_min or lower n_pairs")
        if self.n_queries > self.n_pairs(shortest):
            raise ValueError(f"n_queries={self.n_queries} exceeds the {self.n_pairs(shortest)} pair(s) at length "
                             f"{shortest}; raise train_min or lower n_queries")

    def _make_vocab(self, alphabet: int) -> Vocab:
        return Vocab(alphabet, recall_markers=True)

    def n_pairs(self, n: int) -> int:
        """Pairs listed in a context of length ``n``."""
        k = self.fixed_pairs if self.fixed_pairs is not None else int(n * self.kv_fraction // self.unit)
        return min(k, len(self.key_words), len(self.value_words))

    def context_length(self, n: int) -> int:
        """Context tokens actually used for length ``n`` (``n_pairs`` segments of ``n // n_pairs``)."""
        k = self.n_pairs(n)
        return k * (n // k)

    def total_length(self, n: int) -> int:
        q = self.n_queries
        return 1 + self.context_length(n) + q * (1 + self.key_len) + 1 + q * (1 + self.value_len)

    def _word(self, code: int, n: int) -> list[int]:
        """Base-``A`` digits of ``code`` (a word of ``n`` symbols)."""
        out = []
        for _ in range(n):
            code, d = divmod(code, self.vocab.A)
            out.append(d)
        return out

    def example(self, n: int, rng: random.Random) -> tuple[list[int], list[int]]:
        v = self.vocab
        k = self.n_pairs(n)
        seg = n // k
        keys = [self._word(c, self.key_len) for c in rng.sample(self.key_words, k)]
        values = [self._word(c, self.value_len) for c in rng.sample(self.value_words, k)]
        ctx = []
        for key, val in zip(keys, values):
            before = rng.randint(0, seg - self.unit)
            ctx += [v.FILL] * before + key + [v.COLON] + val + [v.FILL] * (seg - before - self.unit + 1)
        asked = [rng.randrange(k) for _ in range(self.n_queries)]
        src = ctx + [tok for i in asked for tok in [v.QUERY] + keys[i]]
        tgt = [tok for i in asked for tok in [v.QUERY] + values[i]]
        full = [v.BOS] + src + [v.SEP] + tgt + [v.EOS]
        # input = all but EOS; position t predicts token t+1; loss from [SEP] on (the paper's mask)
        return full[:-1], [-100] * (len(src) + 1) + tgt + [v.EOS]

    def scored(self, y: Tensor) -> Tensor:
        """The value tokens of the queries (labels in the alphabet); markers and EOS are not scored."""
        return (y != -100) & (y < self.vocab.A)

    @torch.no_grad()
    def score(self, model, x: Tensor, y: Tensor, device) -> dict[str, float]:
        on_all = self.scored(y)
        hits = total = exact = 0
        for i, pred in self._predictions(model, x, device):
            for r in range(len(pred)):
                on = on_all[i + r]
                q = (pred[r][on] == y[i + r][on]).view(-1, self.value_len).all(-1)  # one flag per query
                hits += int(q.sum())
                total += len(q)
                exact += bool(q.all())
        return {"recall": hits / max(total, 1), "exact_accuracy": exact / len(x)}
