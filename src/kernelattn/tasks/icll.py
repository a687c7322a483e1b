"""In-context language learning on random finite automata (RegBench, SPEC §4).

Each example is a random deterministic finite automaton (DFA); a sequence is a handful
of strings sampled from it, and the model must infer the automaton in context to
predict the next letter. The generator, loss mask and metrics follow RegBench (Akyürek
et al. 2024, "In-context language learning: architectures and algorithms"; its data
module ``src/dataloaders/dfa.py``, its ``analyze.get_dfa_probs`` and ``ngram.py``) and
the figures of the sparse-attention paper (``ICLL/plot_ICL.py``), with these conventions:

**Token ids.** Letters ``a..r`` = 0..17, ``|`` (SEP) = 18, PAD = 19; ``vocab_size = 20``
(RegBench's 18 letters, separator and no-op/pad). There is no BOS token.

**Automata** (as RegBench samples them). The number of states ``n`` is uniform in
4..12 and the alphabet is ``m`` letters, ``m`` uniform in 4..18, drawn without
replacement from the 18. Every state gets ``k`` outgoing letters, ``k`` uniform in 1..3,
drawn without replacement from the alphabet, leading to ``k`` *different* states drawn
without replacement from the other ``n - 1`` (no self-loops). State 0 is the start and
every state accepts, so the language is prefix-closed and a missing transition means
"reject". The drawn automaton is then minimised (unreachable states dropped,
equivalent states merged), as RegBench does with pythomata's ``minimize().trim()``;
merging can leave fewer than 4 states and, on the merged automaton, a self-loop or two
letters into one state. Automata are stored minimised in a canonical numbering
(breadth-first from the start, letters in id order): its transition table is the
automaton's :attr:`DFA.signature`, equal for two automata exactly when they define the
same language. Test, validation and training automata are drawn independently (repeats
within a split are allowed, as in RegBench), but no language of one split occurs in
another: validation draws skip test languages, training draws skip both. (RegBench
meant to ensure this through a set of automata, but its DFA class defines ``__hash__``
without ``__eq__``, so its set removes nothing.)

**Sequences.** ``w_1 | w_2 | ... | w_k`` with ``k`` uniform in 10..19 and each string
``w_i`` a random walk from the start (uniform over the outgoing letters at each step)
of length uniform in ``1..max_len``; no ``|`` after the last string. The model reads
``tokens[:-1]`` and predicts ``tokens[1:]``, so the first letter is never a target.
RegBench uses ``max_len = 49``, which makes sequences of up to 949 tokens; here
``max_len`` defaults to ``min(49, longest that lets every sequence fit seq_len)``
(12 for ``seq_len = 256``, 49 from ``seq_len = 948`` on), keeping RegBench's 10..19
strings per sequence — the in-context evidence the task is about — and shortening the
strings instead. Inputs are right-padded with PAD.

**Training data.** A fixed training set of ``train_size`` sequences, one per training
automaton, drawn once from the seed; :meth:`ICLLTask.sample` picks batches from it
(uniformly with replacement, from the step's generator), so it is repeated over
epochs as in RegBench, never resampled.

**Loss mask.** Targets are the next token, ``-100`` (no loss) where the target is ``|``
and on padding: the model is trained on letters only, as in RegBench (its data module
sets ``labels[labels == id("|")] = -100``).

**True next-letter distribution** ``q`` at an input position: uniform over the letters
that the automaton allows after the string read so far; at ``|`` (a string start) over
the start state's letters. ``|`` is never a valid prediction, not even where the string
in fact ends (RegBench's ``get_dfa_probs``: the distribution of a string that goes on).

**Metrics** (RegBench's ``get_greedy_dfa_accuracy`` and the paper's TVD, ``l1 / 2``),
pooled over every real (non-PAD) input position of every sequence — including the
positions whose target is ``|``. ``p`` is the model's full softmax over all 20 ids (no
renormalisation; mass on ``|`` or PAD counts against it). *Greedy accuracy*: the
fraction of positions where ``argmax p`` (ties to the lowest id) has ``q > 0``.
*TVD*: the mean of ``½ Σ_v |p(v) − q(v)|``.

**Baselines.** RegBench's in-context n-gram predictors with back-off (``ngram.py``,
``backoff=True, addone=False``), scored by the same metrics: at each position, n-grams
of orders 1..n are counted over the strings read so far (the current, partial one
included), each string left-padded with ``n − 1`` start symbols and ``|`` never
counted. The letter ``c`` after context ``h`` (the last ``n − 1`` symbols of the current
string) gets ``count(hc) / count(h)`` if ``hc`` was seen; the mass left,
``1 − Σ_seen count(hc)/count(h)``, goes to the other letters seen so far in proportion
to their back-off (order ``n − 1``, context ``h[1:]``) probabilities, down to unigram
frequencies. ``count(h)`` includes occurrences of ``h`` that nothing followed (ends of
strings, the current position), so when every seen letter has followed ``h`` the
probabilities sum to less than one — RegBench scores them as they are, and so do we.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, deque
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from .base import Record, pad_batch

__all__ = [
    "ICLLTask", "DFA", "random_dfa", "random_raw_dfa", "minimize_dfa", "canonical_dfa", "is_minimal",
    "sample_string", "sample_sequence", "split_sequence", "valid_next_masks", "true_distribution", "ngram_probs",
    "greedy_accuracy", "total_variation", "decode", "N_LETTERS", "SEP", "PAD", "VOCAB_SIZE", "MAX_LEN",
]

N_LETTERS = 18
SEP, PAD = 18, 19
VOCAB_SIZE = 20
MAX_LEN = 49  #: RegBench's longest string
LETTERS = "abcdefghijklmnopqr"
_START = -1  # the n-gram baselines' padding symbol at a string start (RegBench's "_")


def decode(tokens) -> str:
    """Readable string of token ids: letters, ``|``, ``.`` for PAD."""
    table = {SEP: "|", PAD: "."}
    return "".join(table.get(int(t), LETTERS[int(t)] if 0 <= int(t) < N_LETTERS else "?") for t in tokens)


def _rng(*parts) -> random.Random:
    """A ``random.Random`` seeded deterministically from its arguments (no hash randomisation)."""
    h = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(h, "little"))


# -- automata ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DFA:
    """A partial DFA over letter ids with start state 0 and every state accepting.

    Attributes:
        transitions: per state, a tuple of ``(letter, next_state)`` pairs sorted by letter.
    """

    transitions: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def n_states(self) -> int:
        return len(self.transitions)

    @cached_property
    def table(self) -> tuple[dict[int, int], ...]:
        """Per state, ``{letter: next_state}``."""
        return tuple(dict(row) for row in self.transitions)

    @property
    def alphabet(self) -> tuple[int, ...]:
        """The letters used by some transition."""
        return tuple(sorted({a for row in self.transitions for a, _ in row}))

    @property
    def signature(self) -> tuple:
        """Canonical form: equal for two minimal, reachable automata iff same language."""
        return canonical_dfa(self).transitions

    def step(self, state: int, letter: int) -> int:
        """Next state; ``KeyError`` if ``letter`` has no transition from ``state``."""
        return self.table[state][letter]

    def accepts(self, word) -> bool:
        state = 0
        for a in word:
            if a not in self.table[state]:
                return False
            state = self.table[state][a]
        return True


def _reachable(transitions) -> list[int]:
    """States reachable from 0, in breadth-first order (letters in id order)."""
    order, seen, queue = [], {0}, deque([0])
    while queue:
        s = queue.popleft()
        order.append(s)
        for _, t in sorted(transitions[s]):
            if t not in seen:
                seen.add(t)
                queue.append(t)
    return order


def canonical_dfa(dfa: DFA) -> DFA:
    """Renumber the states reachable from the start breadth-first (unreachable ones dropped)."""
    order = _reachable(dfa.transitions)
    new = {old: i for i, old in enumerate(order)}
    return DFA(tuple(tuple((a, new[t]) for a, t in sorted(dfa.transitions[s])) for s in order))


def _equivalence_classes(dfa: DFA) -> list[int]:
    """Per state, the id of its class of states with the same future (Moore refinement).

    With every state accepting, two states are equivalent iff they have the same set of
    outgoing letters and equivalent successors on each.
    """
    rows = [dict(r) for r in dfa.transitions]
    key = [tuple(sorted(r)) for r in rows]
    while True:
        ids = {k: i for i, k in enumerate(sorted(set(key)))}
        cls = [ids[k] for k in key]
        key = [(cls[s], tuple(cls[rows[s][a]] for a in sorted(rows[s]))) for s in range(len(rows))]
        if len(set(key)) == len(set(cls)):
            return cls


def is_minimal(dfa: DFA) -> bool:
    """True iff no two states have the same future."""
    return len(set(_equivalence_classes(dfa))) == dfa.n_states


def minimize_dfa(dfa: DFA) -> DFA:
    """The minimal automaton of the same language, in canonical numbering.

    Drops the states unreachable from the start and merges equivalent ones (what
    RegBench gets from pythomata's ``minimize().trim()``).
    """
    dfa = canonical_dfa(dfa)
    cls = _equivalence_classes(dfa)
    merged = {}
    for s, row in enumerate(dfa.transitions):
        merged.setdefault(cls[s], tuple((a, cls[t]) for a, t in row))
    # class ids are arbitrary; renumber so that the start's class is state 0
    order = sorted(merged, key=lambda c: c != cls[0])
    new = {c: i for i, c in enumerate(order)}
    return canonical_dfa(DFA(tuple(tuple((a, new[t]) for a, t in merged[c]) for c in order)))


def random_raw_dfa(rng: random.Random, min_states: int = 4, max_states: int = 12, max_out: int = 3,
                   min_letters: int = 4, n_letters: int = N_LETTERS) -> DFA:
    """RegBench's random automaton before minimisation.

    ``n`` uniform in ``[min_states, max_states]`` states and an alphabet of ``m`` uniform in
    ``[min_letters, n_letters]`` letters; every state gets ``k`` uniform in ``[1, max_out]``
    distinct letters of the alphabet leading to ``k`` distinct states other than itself.
    States keep their drawn numbers (state 0 is the start; some may be unreachable).
    """
    if not 1 <= min_states <= max_states or not 1 <= max_out < min_states:
        raise ValueError(f"need 1 <= max_out < min_states <= max_states (every state needs max_out other "
                         f"states to lead to), got states {min_states}..{max_states}, max_out={max_out}")
    if not max_out <= min_letters <= n_letters <= N_LETTERS:
        raise ValueError(f"need max_out <= min_letters <= n_letters <= {N_LETTERS} (a state draws max_out "
                         f"letters of the alphabet), got max_out={max_out}, min_letters={min_letters}, "
                         f"n_letters={n_letters}")
    n = rng.randint(min_states, max_states)
    alphabet = rng.sample(range(n_letters), rng.randint(min_letters, n_letters))
    rows = []
    for s in range(n):
        k = rng.randint(1, max_out)
        letters = rng.sample(alphabet, k)
        targets = rng.sample([t for t in range(n) if t != s], k)
        rows.append(tuple(sorted(zip(letters, targets))))
    return DFA(tuple(rows))


def random_dfa(rng: random.Random, min_states: int = 4, max_states: int = 12, max_out: int = 3,
               min_letters: int = 4, n_letters: int = N_LETTERS) -> DFA:
    """A RegBench random automaton (:func:`random_raw_dfa`), minimised (:func:`minimize_dfa`)."""
    return minimize_dfa(random_raw_dfa(rng, min_states, max_states, max_out, min_letters, n_letters))


def sample_string(dfa: DFA, length: int, rng: random.Random) -> list[int]:
    """A random walk of ``length`` letters from the start (uniform over outgoing letters)."""
    state, word = 0, []
    for _ in range(length):
        a, state = dfa.transitions[state][rng.randrange(len(dfa.transitions[state]))]
        word.append(a)
    return word


def sample_sequence(dfa: DFA, rng: random.Random, min_strings: int = 10, max_strings: int = 19,
                    min_len: int = 1, max_len: int = MAX_LEN) -> list[int]:
    """``w_1 | ... | w_k`` with ``k`` and each ``len(w_i)`` uniform in their ranges (no final ``|``)."""
    tokens: list[int] = []
    for i in range(rng.randint(min_strings, max_strings)):
        if i:
            tokens.append(SEP)
        tokens += sample_string(dfa, rng.randint(min_len, max_len), rng)
    return tokens


def split_sequence(tokens: list[int]) -> tuple[list[int], list[int]]:
    """Inputs ``tokens[:-1]`` and targets ``tokens[1:]`` with ``|`` targets set to ``-100`` (no loss)."""
    return tokens[:-1], [-100 if t == SEP else t for t in tokens[1:]]


def valid_next_masks(dfa: DFA, inputs, vocab_size: int = VOCAB_SIZE) -> tuple[Tensor, Tensor]:
    """Valid next letters along an input row under the automaton.

    Args:
        inputs: a model input row (``tokens[:-1]`` of a :func:`sample_sequence`), may be
            PAD-padded.
    Returns:
        ``valid`` bool ``(T, vocab_size)`` (row t: the letters that may follow
        ``inputs[:t+1]`` within the current string; never ``|``) and ``scored`` bool
        ``(T,)`` (True on the real, non-PAD positions: the positions the metrics count).
    Raises:
        ValueError if the row leaves the automaton's language.
    """
    inputs = [int(t) for t in inputs]
    T = len(inputs)
    rows, cols, scored = [], [], [False] * T
    state = 0
    for t, tok in enumerate(inputs):
        if tok == PAD:
            break
        if tok == SEP:
            state = 0
        else:
            if tok not in dfa.table[state]:
                raise ValueError(f"token {tok} at position {t} is not a transition of the automaton")
            state = dfa.table[state][tok]
        ok = [a for a, _ in dfa.transitions[state]]
        rows += [t] * len(ok)
        cols += ok
        scored[t] = True
    valid = torch.zeros(T, vocab_size, dtype=torch.bool)
    valid[rows, cols] = True
    return valid, torch.tensor(scored, dtype=torch.bool)


def true_distribution(valid: Tensor) -> Tensor:
    """Uniform distribution over the valid tokens ``(..., V)`` (rows with none valid: zeros)."""
    v = valid.double()
    return v / v.sum(-1, keepdim=True).clamp_min(1)


# -- metrics -------------------------------------------------------------------------------


def _flat(probs: Tensor, valid: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    if probs.shape != valid.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and valid {tuple(valid.shape)} must have the same shape "
                         f"(the model's full softmax, one row per position)")
    if mask is None:
        mask = torch.ones(probs.shape[:-1], dtype=torch.bool)
    mask = mask.to(probs.device, torch.bool)
    return probs.double()[mask], valid.to(probs.device)[mask]


def greedy_accuracy(probs: Tensor, valid: Tensor, mask: Tensor | None = None) -> float:
    """Fraction of positions whose argmax token is a valid next letter (RegBench's accuracy).

    Args:
        probs: ``(..., V)`` next-token probabilities over the whole vocabulary (or any
            scores with the same argmax; ties go to the lowest id).
        valid: bool ``(..., V)`` valid next tokens.
        mask: bool ``(...)`` positions to score (default: all).
    """
    p, v = _flat(probs, valid, mask)
    if p.shape[0] == 0:
        return float("nan")
    hit = v.gather(-1, p.argmax(-1, keepdim=True)).squeeze(-1)
    return hit.double().mean().item()


def total_variation(probs: Tensor, valid: Tensor, mask: Tensor | None = None) -> float:
    """Mean total-variation distance ``½ Σ_v |p(v) − q(v)|`` between ``probs`` (as given,
    not renormalised) and the uniform distribution ``q`` over the valid next tokens.

    Args as in :func:`greedy_accuracy`.
    """
    p, v = _flat(probs, valid, mask)
    if p.shape[0] == 0:
        return float("nan")
    return (0.5 * (p - true_distribution(v)).abs().sum(-1)).mean().item()


# -- in-context n-gram baselines -----------------------------------------------------------


def _backoff(counts: list[Counter], totals1: int, seen: list[int], ctx: tuple, n: int) -> dict[int, float]:
    """RegBench's back-off probabilities of the ``seen`` letters after ``ctx`` (length n−1)."""
    if n == 1:  # unigram frequencies; the start symbols take part in the total
        return {c: counts[1][(c,)] / totals1 for c in seen}
    cn, den = counts[n], counts[n - 1][ctx]
    out, missing, mass = {}, [], 0.0
    for c in seen:
        k = cn[ctx + (c,)]
        if k:
            out[c] = k / den
            mass += out[c]
        else:
            missing.append(c)
    if missing:
        # mass < 1 here: count(ctx) includes the current occurrence, which nothing follows yet
        lower = _backoff(counts, totals1, seen, ctx[1:], n - 1)
        z = sum(lower[c] for c in missing)
        for c in missing:
            out[c] = (1.0 - mass) * lower[c] / z
    return out


def _ngram_row(tokens: list[int], n: int, vocab_size: int) -> list[list[float]]:
    """In-context n-gram distributions along one unpadded input row (one list per position)."""
    counts = [Counter() for _ in range(n + 1)]  # counts[k][gram]: k-gram counts, k = 1..n
    totals1 = 0
    rows = []
    text: list[int] = []

    def start_string():
        nonlocal text, totals1
        text = [_START] * (n - 1)
        for k in range(1, n):  # the grams inside the padding
            for i in range(n - k):
                counts[k][tuple(text[i:i + k])] += 1
        totals1 += n - 1

    start_string()
    seen: set[int] = set()
    for tok in tokens:
        if tok == SEP:
            start_string()
        else:
            text.append(tok)
            seen.add(tok)
            for k in range(1, n + 1):
                counts[k][tuple(text[-k:])] += 1
            totals1 += 1
        probs = _backoff(counts, totals1, sorted(seen), tuple(text[-(n - 1):]), n)
        row = [0.0] * vocab_size
        for c, p in probs.items():
            row[c] = p
        rows.append(row)
    return rows


def ngram_probs(tokens: Tensor, n: int, vocab_size: int = VOCAB_SIZE) -> Tensor:
    """RegBench's in-context n-gram next-token distributions (``n`` = 2 or 3).

    Row ``t`` predicts the token after ``tokens[:t+1]`` (see the module docstring for
    the counts and the back-off). Mass only on letters seen so far; rows may sum to
    less than one; PAD positions get zeros.

    Args:
        tokens: int ``(B, T)`` (or ``(T,)``) model inputs, right-padded with PAD.
    Returns:
        float64 ``(B, T, vocab_size)`` (or ``(T, vocab_size)``).
    """
    if n not in (2, 3):
        raise ValueError(f"n must be 2 or 3, got {n}")
    squeeze = tokens.dim() == 1
    x = tokens.view(1, -1) if squeeze else tokens
    out = torch.zeros(*x.shape, vocab_size, dtype=torch.float64)
    for b, row in enumerate(x.tolist()):
        real = row[:row.index(PAD)] if PAD in row else row
        if real:
            out[b, :len(real)] = torch.tensor(_ngram_row(real, n, vocab_size), dtype=torch.float64)
    return out[0] if squeeze else out


# -- the task ------------------------------------------------------------------------------


class ICLLTask:
    """RegBench in-context language learning (see the module docstring for conventions).

    Args:
        seq_len: model input length; every sequence fits it.
        seed: base seed of the automata and of all sequences.
        train_size: number of training automata, each with one fixed sequence.
        n_val, n_test: number of validation / test automata (one fixed sequence each for
            :meth:`evaluate` / :meth:`final_metrics`).
        min_strings, max_strings: strings per sequence (RegBench: 10..19).
        min_len, max_len: string lengths (``max_len=None``: ``min(49, longest that fits)``).
        min_states, max_states, max_out, min_letters: automaton size, out-degree and
            alphabet size (RegBench: 4..12 states, 1..3 letters per state, 4..18 letters).
        eval_batch: sequences per forward pass when scoring.
    """

    name = "icll"
    primary = "icll_acc"

    def __init__(self, seq_len: int = 256, seed: int = 0, train_size: int = 1000, n_val: int = 50,
                 n_test: int = 200, min_strings: int = 10, max_strings: int = 19, min_len: int = 1,
                 max_len: int | None = None, min_states: int = 4, max_states: int = 12, max_out: int = 3,
                 min_letters: int = 4, eval_batch: int = 64, **_unused):
        if _unused:
            raise ValueError(f"unknown option(s) for task {self.name}: {', '.join(_unused)}")
        if not 1 <= min_strings <= max_strings:
            raise ValueError(f"need 1 <= min_strings <= max_strings, got {min_strings}, {max_strings}")
        # max_strings strings of max_len letters, max_strings - 1 separators, minus the last token
        fit = (seq_len + 2 - max_strings) // max_strings
        max_len = min(MAX_LEN, fit) if max_len is None else int(max_len)
        if not 1 <= min_len <= max_len or max_len > fit:
            raise ValueError(f"string lengths {min_len}..{max_len} do not fit seq_len={seq_len} with "
                             f"{max_strings} strings (longest that fits: {fit}); raise seq_len or lower "
                             f"max_strings / max_len")
        if train_size < 1 or n_val < 1 or n_test < 1:
            raise ValueError(f"train_size, n_val, n_test must be >= 1, got {train_size}, {n_val}, {n_test}")
        self.seq_len, self.seed, self.train_size = int(seq_len), int(seed), int(train_size)
        self.n_val, self.n_test, self.eval_batch = int(n_val), int(n_test), int(eval_batch)
        self.strings = (int(min_strings), int(max_strings))
        self.lengths = (int(min_len), max_len)
        self.dfa_kw = dict(min_states=int(min_states), max_states=int(max_states), max_out=int(max_out),
                           min_letters=int(min_letters))
        random_raw_dfa(random.Random(0), **self.dfa_kw)  # fail here on bad automaton sizes
        self.vocab_size = VOCAB_SIZE
        self._train: dict[int, DFA] = {}
        self._train_batch: tuple[Tensor, ...] | None = None
        self._eval: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        self._eval_targets: dict[str, Tensor] = {}
        # held-out automata: test first, then validation without the test languages
        self.test_dfas = self._draw(("test",), self.n_test, set())
        self.val_dfas = self._draw(("val",), self.n_val, {d.signature for d in self.test_dfas})
        self._held_out = {d.signature for d in self.test_dfas + self.val_dfas}

    def _draw(self, stream: tuple, n: int, exclude: set) -> list[DFA]:
        rng, out = _rng(self.seed, "dfa", *stream), []
        for _ in range(1000 * n):
            d = random_dfa(rng, **self.dfa_kw)
            if d.signature not in exclude:
                out.append(d)
                if len(out) == n:
                    return out
        raise RuntimeError(f"could not draw {n} automata outside the other splits' languages with {self.dfa_kw}")

    def train_dfa(self, i: int) -> DFA:
        """Training automaton ``i`` (drawn on first use, never a validation/test language)."""
        if not 0 <= i < self.train_size:
            raise IndexError(f"training automaton {i} out of range 0..{self.train_size - 1}")
        if i not in self._train:
            rng = _rng(self.seed, "dfa", "train", i)
            for _ in range(10_000):
                d = random_dfa(rng, **self.dfa_kw)
                if d.signature not in self._held_out:
                    break
            else:
                raise RuntimeError(f"no training automaton outside the held-out languages with {self.dfa_kw}")
            self._train[i] = d
        return self._train[i]

    def dfas(self, split: str) -> list[DFA]:
        """The automata of ``split`` (``train``, ``val`` or ``test``), one per sequence."""
        if split == "train":
            return [self.train_dfa(i) for i in range(self.train_size)]
        if split in ("val", "test"):
            return self.val_dfas if split == "val" else self.test_dfas
        raise ValueError(f"split must be train, val or test, got {split!r}")

    def sequence(self, dfa: DFA, rng: random.Random) -> list[int]:
        """One sequence of ``dfa`` (tokens, before the input/target split)."""
        return sample_sequence(dfa, rng, *self.strings, *self.lengths)

    def _batch(self, seqs: list[list[int]]) -> tuple[Tensor, Tensor]:
        pairs = [split_sequence(s) for s in seqs]
        return pad_batch([p[0] for p in pairs], [p[1] for p in pairs], self.seq_len, PAD)

    def _sequences(self, split: str) -> list[list[int]]:
        return [self.sequence(d, _rng(self.seed, "seq", split, i)) for i, d in enumerate(self.dfas(split))]

    def _fixed(self, split: str) -> tuple[Tensor, Tensor]:
        if split == "train":
            if self._train_batch is None:
                # int16 holds every id and -100: a quarter of the memory of 40k rows of int64
                self._train_batch = tuple(t.to(torch.int16) for t in self._batch(self._sequences("train")))
            return self._train_batch
        x, _, _ = self.eval_set(split)
        return x, self._eval_targets[split]

    def data(self, split: str) -> tuple[Tensor, Tensor]:
        """The fixed int64 inputs and targets ``(N, seq_len)`` of ``split``, one row per automaton."""
        x, y = self._fixed(split)
        return x.long(), y.long()

    def sample(self, split: str, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` rows of the fixed set of ``split``, drawn uniformly with replacement.

        Returns int64 inputs ``(n, seq_len)`` and targets ``(n, seq_len)`` (``-100``: no loss).
        """
        x, y = self._fixed(split)
        which = torch.randint(x.shape[0], (n,), generator=generator)
        return x[which].long(), y[which].long()

    def eval_set(self, split: str) -> tuple[Tensor, Tensor, Tensor]:
        """The fixed scoring set of ``val``/``test``: one sequence per automaton.

        Returns inputs ``(N, T)``, ``valid`` bool ``(N, T, V)`` and ``scored`` bool ``(N, T)``.
        """
        if split not in ("val", "test"):
            raise ValueError(f"eval_set is for val or test, got {split!r}")
        if split not in self._eval:
            x, y = self._batch(self._sequences(split))
            masks = [valid_next_masks(d, row) for d, row in zip(self.dfas(split), x)]
            self._eval[split] = (x, torch.stack([m[0] for m in masks]), torch.stack([m[1] for m in masks]))
            self._eval_targets[split] = y
        return self._eval[split]

    @torch.no_grad()
    def model_probs(self, model: torch.nn.Module, x: Tensor, device) -> Tensor:
        """Softmax of ``model(x)`` over the whole vocabulary (float32, on CPU), in batches."""
        out = []
        for i in range(0, x.shape[0], self.eval_batch):
            logits = model(x[i:i + self.eval_batch].to(device))
            logits = logits[0] if isinstance(logits, tuple) else logits
            out.append(torch.softmax(logits.float(), dim=-1).cpu())
        return torch.cat(out)

    def score(self, probs: Tensor, split: str) -> dict[str, float]:
        """Greedy accuracy and TVD of next-token ``probs`` ``(N, T, V)`` on ``split``'s eval set."""
        _, valid, scored = self.eval_set(split)
        return {"accuracy": greedy_accuracy(probs, valid, scored), "tvd": total_variation(probs, valid, scored)}

    def evaluate(self, model: torch.nn.Module, device) -> dict[str, float]:
        """Greedy accuracy and TVD on the validation automata."""
        x, _, _ = self.eval_set("val")
        m = self.score(self.model_probs(model, x, device), "val")
        return {"icll_acc": m["accuracy"], "icll_tvd": m["tvd"]}

    def final_metrics(self, model: torch.nn.Module, device) -> list[Record]:
        """Accuracy and TVD on the test automata."""
        x, _, _ = self.eval_set("test")
        m = self.score(self.model_probs(model, x, device), "test")
        return [{"metric": k, "value": v, "train_size": self.train_size} for k, v in m.items()]

    def baseline_metrics(self) -> list[Record]:
        """The in-context 2-gram and 3-gram predictors, scored like the model on the test set."""
        x, _, _ = self.eval_set("test")
        records = []
        for n in (2, 3):
            m = self.score(ngram_probs(x, n), "test")
            records += [dict(metric=k, value=v, train_size=self.train_size, method=f"{n}gram") for k, v in m.items()]
        return records
