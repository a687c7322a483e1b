"""In-context language learning on random finite automata (RegBench, SPEC §4).

Each example is a random deterministic finite automaton (DFA); a sequence is a handful
of strings sampled from it, and the model must infer the automaton in context to
predict the next symbol. After Akyürek et al. (2024), "In-context language learning:
architectures and algorithms", with these conventions:

**Automata.** ``n`` states (uniform in 4..12), an alphabet of ``min(n, 20)`` letters drawn
without replacement from the 20, each state with 1..3 outgoing letters (drawn without
replacement from the alphabet) leading to uniformly random states; state 0 is the start.
Every state accepts, so the language is prefix-closed and a missing transition means
"reject". Draws are rejected until every state is reachable from the start and the
automaton is minimal (no two states with the same future), so the number of states is
that of the language (the reachability condition tilts out-degrees towards 3: about
40% / 33% / 27% of states have 3 / 2 / 1 letters). Automata are stored in a canonical numbering (breadth-first from
the start, letters in id order); its transition table is the automaton's
:attr:`DFA.signature`, equal for two automata exactly when they define the same language.
Train, validation and test automata have pairwise different signatures.

**Sequences.** ``[BOS] w_1 | w_2 | ... | w_k |`` with ``k`` uniform in 10..19 and each
string ``w_i`` a random walk from the start (uniform over the outgoing letters at each
step) of length uniform in ``1..max_len``; ``max_len`` defaults to the longest that lets
every sequence fit ``seq_len`` (12 for ``seq_len = 256``). Inputs are right-padded with
PAD; targets are the next token, with ``-100`` on padding only (every real next token,
separators included, carries loss).

**Token ids.** letters ``a..t`` = 0..19, ``|`` (SEP) = 20, BOS = 21, PAD = 22;
``vocab_size = 23``. The 21 ids 0..20 are the *outputs* the metrics look at.

**True next-symbol distribution.** At the start of a string (after BOS or ``|``) it is
uniform over the start state's letters (strings are never empty). After at least one
letter it is uniform over the current state's letters *and* ``|`` (every state accepts,
so the string may end). The sampler's length cap is not part of it: the distribution is
the automaton's, not the sampler's. Every position whose target is a real token is
scored (the position holding the final ``|`` predicts PAD and is not).

**Metrics** (pooled over all scored positions of all sequences). The model's
distribution is its softmax restricted to the 21 outputs and renormalised (BOS and PAD
mass dropped). *Greedy accuracy*: the fraction of positions whose argmax output (ties to
the lowest id) is valid. *TVD*: the mean of ``½ Σ_v |p(v) − q(v)|`` with ``q`` the true
distribution above.

**Baselines.** In-context n-gram predictors: the 2-gram predicts from the counts of what
followed earlier occurrences of the current token in the same sequence, the 3-gram from
what followed earlier occurrences of the last two tokens (BOS and ``|`` count as tokens).
Maximum-likelihood counts with back-off: 3-gram → 2-gram → counts of all outputs seen so
far → uniform over the 21 outputs, each step taken when the longer context has no count.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from .base import Record, pad_batch

__all__ = [
    "ICLLTask", "DFA", "random_dfa", "canonical_dfa", "is_minimal", "sample_string", "sample_sequence",
    "valid_next_masks", "true_distribution", "ngram_probs", "greedy_accuracy", "total_variation",
    "restrict_to_outputs", "decode", "N_LETTERS", "SEP", "BOS", "PAD", "N_OUTPUTS", "VOCAB_SIZE",
]

N_LETTERS = 20
SEP, BOS, PAD = 20, 21, 22
N_OUTPUTS = 21  # letters + SEP: the ids the metrics look at
VOCAB_SIZE = 23
LETTERS = "abcdefghijklmnopqrst"


def decode(tokens) -> str:
    """Readable string of token ids: letters, ``|``, ``^`` for BOS, ``.`` for PAD."""
    table = {SEP: "|", BOS: "^", PAD: "."}
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


def is_minimal(dfa: DFA) -> bool:
    """True iff no two states have the same future (Moore partition refinement).

    With every state accepting, two states are equivalent iff they have the same set of
    outgoing letters and equivalent successors on each.
    """
    rows = [dict(r) for r in dfa.transitions]
    cls = [tuple(sorted(r)) for r in rows]
    n_cls = len(set(cls))
    while True:
        ids = {c: i for i, c in enumerate(sorted(set(cls)))}
        cur = [ids[c] for c in cls]
        cls = [(cur[s], tuple(cur[rows[s][a]] for a in sorted(rows[s]))) for s in range(len(rows))]
        new_n = len(set(cls))
        if new_n == n_cls:
            return n_cls == len(rows)
        n_cls = new_n


def random_dfa(rng: random.Random, min_states: int = 4, max_states: int = 12, max_out: int = 3,
               n_letters: int = N_LETTERS) -> DFA:
    """A random minimal DFA whose states are all reachable, in canonical numbering.

    The number of states is drawn first (uniform in ``[min_states, max_states]``); then
    alphabet and transitions are redrawn until the automaton is reachable and minimal.
    """
    n = rng.randint(min_states, max_states)
    k = min(n, n_letters)
    while True:
        alphabet = sorted(rng.sample(range(n_letters), k))
        rows = []
        for _ in range(n):
            letters = sorted(rng.sample(alphabet, rng.randint(1, min(max_out, k))))
            rows.append(tuple((a, rng.randrange(n)) for a in letters))
        if len(_reachable(rows)) < n:
            continue
        dfa = canonical_dfa(DFA(tuple(rows)))
        if is_minimal(dfa):
            return dfa


def sample_string(dfa: DFA, length: int, rng: random.Random) -> list[int]:
    """A random walk of ``length`` letters from the start (uniform over outgoing letters)."""
    state, word = 0, []
    for _ in range(length):
        a, state = dfa.transitions[state][rng.randrange(len(dfa.transitions[state]))]
        word.append(a)
    return word


def sample_sequence(dfa: DFA, rng: random.Random, min_strings: int = 10, max_strings: int = 19,
                    min_len: int = 1, max_len: int = 12) -> list[int]:
    """``[BOS] w_1 | ... | w_k |`` with ``k`` and each ``len(w_i)`` uniform in their ranges."""
    tokens = [BOS]
    for _ in range(rng.randint(min_strings, max_strings)):
        tokens += sample_string(dfa, rng.randint(min_len, max_len), rng)
        tokens.append(SEP)
    return tokens


def valid_next_masks(dfa: DFA, tokens, vocab_size: int = VOCAB_SIZE) -> tuple[Tensor, Tensor]:
    """Valid next tokens along a sequence under the automaton.

    Args:
        tokens: a sequence as produced by :func:`sample_sequence` (may be PAD-padded).
    Returns:
        ``valid`` bool ``(T, vocab_size)`` (row t: tokens that may follow ``tokens[:t+1]``)
        and ``scored`` bool ``(T,)`` (True where the target ``tokens[t+1]`` is a real token).
    Raises:
        ValueError if the sequence leaves the automaton's language.
    """
    tokens = [int(t) for t in tokens]
    T = len(tokens)
    rows, cols, scored = [], [], [False] * T
    start_letters = [a for a, _ in dfa.transitions[0]]
    state = None  # None: at a string start (nothing read since BOS or |)
    for t, tok in enumerate(tokens):
        if tok == PAD:
            break
        if tok in (BOS, SEP):
            state = None
        else:
            row = dfa.table[0 if state is None else state]
            if tok not in row:
                raise ValueError(f"token {tok} at position {t} is not a transition of the automaton")
            state = row[tok]
        ok = start_letters if state is None else [a for a, _ in dfa.transitions[state]] + [SEP]
        rows += [t] * len(ok)
        cols += ok
        scored[t] = t + 1 < T and tokens[t + 1] != PAD
    valid = torch.zeros(T, vocab_size, dtype=torch.bool)
    valid[rows, cols] = True
    return valid, torch.tensor(scored, dtype=torch.bool)


def true_distribution(valid: Tensor) -> Tensor:
    """Uniform distribution over the valid tokens ``(..., V)`` (rows with none valid: zeros)."""
    v = valid.double()
    return v / v.sum(-1, keepdim=True).clamp_min(1)


# -- metrics -------------------------------------------------------------------------------


def restrict_to_outputs(probs: Tensor, n_outputs: int = N_OUTPUTS) -> Tensor:
    """Keep the first ``n_outputs`` ids (letters and SEP) and renormalise, in float64.

    Rows with no mass there become uniform over the outputs.
    """
    p = probs[..., :n_outputs].double().clamp_min(0)
    total = p.sum(-1, keepdim=True)
    return torch.where(total > 0, p / total.clamp_min(1e-300), torch.full_like(p, 1.0 / n_outputs))


def _flat(probs: Tensor, valid: Tensor, mask: Tensor | None, n_outputs: int) -> tuple[Tensor, Tensor]:
    p = restrict_to_outputs(probs, n_outputs)
    v = valid[..., :n_outputs]
    if mask is None:
        mask = torch.ones(p.shape[:-1], dtype=torch.bool, device=p.device)
    mask = mask.to(p.device, torch.bool)
    return p[mask], v.to(p.device)[mask]


def greedy_accuracy(probs: Tensor, valid: Tensor, mask: Tensor | None = None, n_outputs: int = N_OUTPUTS) -> float:
    """Fraction of positions whose argmax output is a valid next token.

    Args:
        probs: ``(..., V)`` next-token probabilities (or any scores with the same argmax;
            only the first ``n_outputs`` ids are considered, ties go to the lowest id).
        valid: bool ``(..., V)`` valid next tokens.
        mask: bool ``(...)`` positions to score (default: all).
    """
    p, v = _flat(probs, valid, mask, n_outputs)
    if p.shape[0] == 0:
        return float("nan")
    hit = v.gather(-1, p.argmax(-1, keepdim=True)).squeeze(-1)
    return hit.double().mean().item()


def total_variation(probs: Tensor, valid: Tensor, mask: Tensor | None = None, n_outputs: int = N_OUTPUTS) -> float:
    """Mean total-variation distance ``½ Σ |p − q|`` between the restricted, renormalised
    ``probs`` and the uniform distribution ``q`` over the valid next tokens.

    Args as in :func:`greedy_accuracy`.
    """
    p, v = _flat(probs, valid, mask, n_outputs)
    if p.shape[0] == 0:
        return float("nan")
    q = true_distribution(v)
    return (0.5 * (p - q).abs().sum(-1)).mean().item()


# -- in-context n-gram baselines -----------------------------------------------------------


def ngram_probs(tokens: Tensor, n: int, n_outputs: int = N_OUTPUTS) -> Tensor:
    """In-context n-gram next-token distributions (``n`` = 2 or 3) over the outputs.

    Row ``t`` predicts ``tokens[t+1]`` from the counts, in ``tokens[:t+1]``, of what
    followed earlier occurrences of the last ``n−1`` tokens. Back-off when that context
    has no count: 3-gram → 2-gram → all outputs seen so far → uniform.

    Args:
        tokens: int ``(B, T)`` (or ``(T,)``).
    Returns:
        float64 ``(B, T, n_outputs)`` (or ``(T, n_outputs)``).
    """
    if n not in (2, 3):
        raise ValueError(f"n must be 2 or 3, got {n}")
    squeeze = tokens.dim() == 1
    x = tokens.view(1, -1) if squeeze else tokens
    T = x.shape[1]
    nxt = torch.full_like(x, -1)
    nxt[:, :-1] = x[:, 1:]
    out = torch.nn.functional.one_hot(nxt.clamp_min(0), max(n_outputs, int(x.max()) + 1))[..., :n_outputs]
    out = (out * (nxt >= 0).unsqueeze(-1)).float()  # (B, T, n_outputs): one-hot of tokens[j+1]; exact counts
    t_idx = torch.arange(T, device=x.device)
    earlier = t_idx[None, :] < t_idx[:, None]  # (T, T): j < t, so tokens[j+1] is already seen at t
    same = (x[:, :, None] == x[:, None, :]) & earlier  # (B, T, T): tokens[j] == tokens[t]
    counts = torch.bmm(same.float(), out).double()  # (B, T, n_outputs) 2-gram counts
    if n == 3:
        prev = torch.full_like(x, -1)
        prev[:, 1:] = x[:, :-1]
        same3 = same & (prev[:, :, None] == prev[:, None, :]) & (prev[:, None, :] >= 0)
        counts3 = torch.bmm(same3.float(), out).double()
        counts = torch.where(counts3.sum(-1, keepdim=True) > 0, counts3, counts)
    seen = (torch.cumsum(out, dim=1) - out).double()  # outputs among tokens[1..t]
    counts = torch.where(counts.sum(-1, keepdim=True) > 0, counts, seen)
    counts = torch.where(counts.sum(-1, keepdim=True) > 0, counts, torch.ones_like(counts))
    probs = counts / counts.sum(-1, keepdim=True)
    return probs[0] if squeeze else probs


# -- the task ------------------------------------------------------------------------------


class ICLLTask:
    """RegBench in-context language learning (see the module docstring for conventions).

    Args:
        seq_len: model input length; every sequence fits it.
        seed: base seed of the automata and the fixed evaluation sequences.
        train_size: number of training automata (the pool ``sample("train")`` draws from).
        n_val, n_test: number of validation / test automata (one fixed sequence each for
            :meth:`evaluate` / :meth:`final_metrics`).
        min_strings, max_strings: strings per sequence.
        min_len, max_len: string lengths (``max_len=None``: the longest that fits).
        min_states, max_states, max_out: automaton size and out-degree.
        eval_batch: sequences per forward pass when scoring.
    """

    name = "icll"
    primary = "icll_acc"

    def __init__(self, seq_len: int = 256, seed: int = 0, train_size: int = 1000, n_val: int = 50,
                 n_test: int = 200, min_strings: int = 10, max_strings: int = 19, min_len: int = 1,
                 max_len: int | None = None, min_states: int = 4, max_states: int = 12, max_out: int = 3,
                 eval_batch: int = 64, **_unused):
        if _unused:
            raise ValueError(f"unknown option(s) for task {self.name}: {', '.join(_unused)}")
        if not 1 <= min_strings <= max_strings:
            raise ValueError(f"need 1 <= min_strings <= max_strings, got {min_strings}, {max_strings}")
        if not 1 <= min_states <= max_states or max_out < 1:
            raise ValueError(f"bad automaton sizes: states {min_states}..{max_states}, max_out={max_out}")
        fit = (seq_len - 1) // max_strings - 1  # BOS + max_strings * (max_len + 1) <= seq_len
        max_len = fit if max_len is None else int(max_len)
        if not 1 <= min_len <= max_len or max_len > fit:
            raise ValueError(f"string lengths {min_len}..{max_len} do not fit seq_len={seq_len} with "
                             f"{max_strings} strings (longest that fits: {fit})")
        if train_size < 1 or n_val < 1 or n_test < 1:
            raise ValueError(f"train_size, n_val, n_test must be >= 1, got {train_size}, {n_val}, {n_test}")
        self.seq_len, self.seed, self.train_size = int(seq_len), int(seed), int(train_size)
        self.n_val, self.n_test, self.eval_batch = int(n_val), int(n_test), int(eval_batch)
        self.strings = (int(min_strings), int(max_strings))
        self.lengths = (int(min_len), max_len)
        self.dfa_kw = dict(min_states=int(min_states), max_states=int(max_states), max_out=int(max_out))
        self.vocab_size = VOCAB_SIZE
        self._train: dict[int, DFA] = {}
        self._eval: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        # fixed held-out automata: test first, then validation, disjoint by signature
        self.test_dfas = self._distinct(("test",), self.n_test, set())
        self.val_dfas = self._distinct(("val",), self.n_val, {d.signature for d in self.test_dfas})
        self._held_out = {d.signature for d in self.test_dfas + self.val_dfas}

    def _distinct(self, stream: tuple, n: int, exclude: set) -> list[DFA]:
        rng, out, seen = _rng(self.seed, "dfa", *stream), [], set(exclude)
        for _ in range(1000 * n):
            d = random_dfa(rng, **self.dfa_kw)
            if d.signature not in seen:
                seen.add(d.signature)
                out.append(d)
                if len(out) == n:
                    return out
        raise RuntimeError(f"could not draw {n} distinct automata with {self.dfa_kw}")

    def train_dfa(self, i: int) -> DFA:
        """Training automaton ``i`` of the pool (drawn lazily, never a val/test language)."""
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

    def dfas(self, split: str) -> list[DFA] | None:
        """The fixed automata of ``val``/``test`` (``None`` for ``train``, drawn lazily)."""
        if split == "train":
            return None
        if split in ("val", "test"):
            return self.val_dfas if split == "val" else self.test_dfas
        raise ValueError(f"split must be train, val or test, got {split!r}")

    def sequence(self, dfa: DFA, rng: random.Random) -> list[int]:
        return sample_sequence(dfa, rng, *self.strings, *self.lengths)

    def _batch(self, seqs: list[list[int]]) -> tuple[Tensor, Tensor]:
        return pad_batch(seqs, [s[1:] for s in seqs], self.seq_len, PAD)

    def sample(self, split: str, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` sequences of random automata of ``split``: inputs and next-token targets."""
        fixed = self.dfas(split)
        pool = self.train_size if fixed is None else len(fixed)
        which = torch.randint(pool, (n,), generator=generator).tolist()
        seeds = torch.randint(2 ** 62, (n,), generator=generator).tolist()
        seqs = []
        for i, s in zip(which, seeds):
            dfa = self.train_dfa(i) if fixed is None else fixed[i]
            seqs.append(self.sequence(dfa, random.Random(s)))
        return self._batch(seqs)

    def eval_set(self, split: str) -> tuple[Tensor, Tensor, Tensor]:
        """The fixed scoring set of ``val``/``test``: one sequence per automaton.

        Returns inputs ``(N, T)``, ``valid`` bool ``(N, T, V)`` and ``scored`` bool ``(N, T)``.
        """
        if split not in self._eval:
            dfas = self.dfas(split)
            if dfas is None:
                raise ValueError("eval_set is for val or test")
            seqs = [self.sequence(d, _rng(self.seed, "seq", split, i)) for i, d in enumerate(dfas)]
            x, _ = self._batch(seqs)
            masks = [valid_next_masks(d, row) for d, row in zip(dfas, x)]
            self._eval[split] = (x, torch.stack([m[0] for m in masks]), torch.stack([m[1] for m in masks]))
        return self._eval[split]

    @torch.no_grad()
    def model_probs(self, model: torch.nn.Module, x: Tensor, device) -> Tensor:
        """Softmax of ``model(x)`` (float32, on CPU), in batches of ``eval_batch``."""
        out = []
        for i in range(0, x.shape[0], self.eval_batch):
            logits = model(x[i:i + self.eval_batch].to(device))
            logits = logits[0] if isinstance(logits, tuple) else logits
            out.append(torch.softmax(logits.float(), dim=-1).cpu())
        return torch.cat(out)

    def score(self, probs: Tensor, split: str) -> dict[str, float]:
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
