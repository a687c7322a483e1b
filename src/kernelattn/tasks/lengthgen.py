"""Length generalisation: copy, reverse, sort and MQMTAR (SPEC §4).

Sequences are ``[BOS] source [SEP] target [EOS]`` with the next-token loss on the target
part only (target tokens and EOS). Models train on source lengths in
``[train_min, train_max]`` and are tested at fixed longer lengths. Metrics are
teacher-forced argmax: ``exact_match`` (every target token and EOS right) and
``token_accuracy``; for MQMTAR ``recall`` (both value tokens of a query right) and
``exact_accuracy`` (every query of the sequence right).

Token ids: 0..A-1 are the alphabet; then BOS, SEP, EOS, PAD, and for MQMTAR the
markers ``:`` ``,`` ``?`` and a filler token.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

from .base import Record, pad_batch

__all__ = ["SequenceTask", "CopyTask", "ReverseTask", "SortTask", "MQMTARTask", "Vocab"]


class Vocab:
    """Shared token layout of the synthetic tasks (alphabet of ``A`` symbols + specials)."""

    def __init__(self, alphabet: int = 32):
        if alphabet < 2:
            raise ValueError(f"alphabet must be >= 2, got {alphabet}")
        self.A = alphabet
        self.BOS, self.SEP, self.EOS, self.PAD = alphabet, alphabet + 1, alphabet + 2, alphabet + 3
        self.COLON, self.COMMA, self.QUERY, self.FILL = alphabet + 4, alphabet + 5, alphabet + 6, alphabet + 7
        self.size = alphabet + 8


class SequenceTask:
    """Common machinery: sampling by length, teacher-forced scoring, result records.

    Args:
        train_min, train_max: range of training source lengths.
        test_lengths: lengths scored by :meth:`final_metrics`.
        alphabet: number of symbols.
        seed: base seed of the fixed evaluation sets.
        n_eval: sequences per test length.
    """

    name = "sequence"
    primary = "exact_match"
    metrics = ("exact_match", "token_accuracy")

    def __init__(self, train_min: int = 8, train_max: int = 16, test_lengths=(16, 32, 64), alphabet: int = 32,
                 seed: int = 0, n_eval: int = 200, eval_batch: int = 50, **_unused):
        if not 1 <= train_min <= train_max:
            raise ValueError(f"need 1 <= train_min <= train_max, got {train_min}, {train_max}")
        self.train_min, self.train_max = int(train_min), int(train_max)
        self.test_lengths = sorted(int(t) for t in test_lengths)
        self.vocab = Vocab(alphabet)
        self.vocab_size = self.vocab.size
        self.seed, self.n_eval, self.eval_batch = seed, n_eval, eval_batch
        self.seq_len = self.total_length(self.train_max)
        if _unused:
            raise ValueError(f"unknown option(s) for task {self.name}: {', '.join(_unused)}")

    # -- format ------------------------------------------------------------------------
    def total_length(self, n: int) -> int:
        """Model input length for source length ``n`` ([BOS] src [SEP] tgt, EOS predicted last)."""
        return 2 * n + 2

    def target_of(self, src: list[int], rng: random.Random) -> list[int]:
        raise NotImplementedError

    def source(self, n: int, rng: random.Random) -> list[int]:
        return [rng.randrange(self.vocab.A) for _ in range(n)]

    def example(self, n: int, rng: random.Random) -> tuple[list[int], list[int]]:
        """Inputs and targets (-100 off the target part) for one sequence of source length ``n``."""
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
        return pad_batch(list(seqs), list(tgts), len(seqs[0]), self.vocab.PAD)

    @torch.no_grad()
    def score(self, model, x: Tensor, y: Tensor, device) -> dict[str, float]:
        """Teacher-forced argmax metrics of ``model`` on a fixed set."""
        correct_tok = total_tok = 0
        exact = []
        for i in range(0, len(x), self.eval_batch):
            xb, yb = x[i:i + self.eval_batch].to(device), y[i:i + self.eval_batch].to(device)
            pred = model(xb).argmax(-1)
            on = yb != -100
            ok = (pred == yb) | ~on
            correct_tok += int(((pred == yb) & on).sum())
            total_tok += int(on.sum())
            exact.append(ok.all(-1).float().cpu())
        return {"exact_match": torch.cat(exact).mean().item(), "token_accuracy": correct_tok / max(total_tok, 1)}

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
    """Multi-query multi-token associative recall.

    The context lists ``L // 8`` pairs ``k1 k2 : v1 v2 ,`` scattered among filler tokens
    (``L`` context tokens in all); after ``[SEP]`` come up to ``n_queries`` queries
    ``? k1 k2 v1 v2`` over distinct listed keys, with the loss on ``v1 v2``. Keys are
    distinct within a sequence; values are drawn per sequence, so they must be recalled
    from the context (a dictionary fixed across sequences could be memorised in the
    weights, which would not test recall). "Length" is the context length ``L``.
    """

    name = "mqmtar"
    primary = "recall"
    metrics = ("recall", "exact_accuracy")

    def __init__(self, train_min: int = 24, train_max: int = 48, test_lengths=(48, 96, 192), n_queries: int = 4,
                 **kw):
        self.n_queries = int(n_queries)
        if self.n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {n_queries}")
        if train_min < 8:
            raise ValueError(f"mqmtar needs train_min >= 8 (one pair and filler), got {train_min}")
        super().__init__(train_min, train_max, test_lengths, **kw)

    def total_length(self, n: int) -> int:
        return 1 + n + 1 + 5 * self.n_queries  # BOS, context, SEP, queries (EOS not predicted)

    def example(self, n: int, rng: random.Random) -> tuple[list[int], list[int]]:
        v = self.vocab
        n_pairs = max(1, n // 8)
        keys = rng.sample(range(v.A * v.A), n_pairs)
        pairs = [(divmod(k, v.A), (rng.randrange(v.A), rng.randrange(v.A))) for k in keys]
        n_fill = n - 6 * n_pairs
        # filler placed in random gaps between pairs
        gaps = [0] * (n_pairs + 1)
        for _ in range(n_fill):
            gaps[rng.randrange(n_pairs + 1)] += 1
        ctx = [v.FILL] * gaps[0]
        for (k, val), g in zip(pairs, gaps[1:]):
            ctx += [k[0], k[1], v.COLON, val[0], val[1], v.COMMA] + [v.FILL] * g
        x, y = [v.BOS] + ctx + [v.SEP], [-100] * (len(ctx) + 2)
        for (k, val) in rng.sample(pairs, min(self.n_queries, n_pairs)):
            x += [v.QUERY, k[0], k[1], val[0], val[1]]
            y += [-100, -100, -100, val[0], val[1]]
        # y above labels tokens; position i must predict token i+1, so shift by one
        return x, y[1:] + [-100]

    @torch.no_grad()
    def score(self, model, x: Tensor, y: Tensor, device) -> dict[str, float]:
        hits = total = 0
        exact = []
        for i in range(0, len(x), self.eval_batch):
            xb, yb = x[i:i + self.eval_batch].to(device), y[i:i + self.eval_batch].to(device)
            ok = (model(xb).argmax(-1) == yb).cpu()
            on = (yb != -100).cpu()
            for row_ok, row_on in zip(ok, on):
                idx = row_on.nonzero().flatten()
                q = row_ok[idx].view(-1, 2).all(-1)  # both value tokens of each query
                hits += int(q.sum())
                total += len(q)
                exact.append(bool(q.all()))
        return {"recall": hits / max(total, 1), "exact_accuracy": sum(exact) / max(len(exact), 1)}
