"""Language modelling on the built-in stories or a user's corpus, bytes or BPE tokens.

Metrics: validation loss (nats per token), the same per byte of text
(``val_loss_per_byte``, comparable across tokenizers), loss by position in the window,
and ``recall_loss`` — the loss on tokens that carry a byte of a capitalised word (a
name) that already appeared earlier in the same window, after its first letter. In the
built-in stories those are the invented character names, which can only be predicted by
recalling them from context; on any corpus they are mostly proper nouns.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor
from torch.nn import functional as F

from ..data import TextCorpus, build_tokenizer, generate_stories, read_corpus, split_text
from .base import Record

__all__ = ["LMTask"]

_NAME = re.compile(rb"\b[A-Z][a-z]{3,}\b")
_BYTES = [bytes([i]) for i in range(256)]


class LMTask:
    """Next-token prediction over UTF-8 bytes or a byte-level BPE trained on the corpus.

    Args:
        seq_len: window length, in tokens.
        corpus: ``"stories"`` (built-in, generated offline) or a path to a text file, a
            folder, or JSONL with a ``text_field``.
        n_stories: stories generated for the built-in corpus.
        n_eval: validation windows for the final metrics.
        positions: number of position buckets for ``loss_by_position``.
        eval_batch: windows per forward pass when scoring.
        tokenizer: ``"bytes"`` (256 ids) or ``"bpe"`` — byte-level BPE trained with the
            ``tokenizers`` package on the training part of the corpus only (the last
            10% of the text is validation and is never seen by the tokenizer).
        vocab_size: BPE vocabulary size, > 256 (default 1024); the paper used GPT-2's
            50k tokenizer on BabiStories, far more than a small corpus supports.
        tokenizer_file: optional JSON file: loaded if it exists, else the trained
            tokenizer is written there. Without it the tokenizer is retrained on each
            construction, which is deterministic (same text and size, same ids).
    """

    name = "lm"
    primary = "val_loss"

    def __init__(self, seq_len: int = 128, corpus: str = "stories", seed: int = 0, n_stories: int = 2000,
                 text_field: str = "text", n_eval: int = 64, positions: int = 8, eval_batch: int = 16,
                 tokenizer: str = "bytes", vocab_size: int | None = None, tokenizer_file: str | None = None):
        text = generate_stories(n_stories, seed=1000 + seed) if corpus == "stories" else read_corpus(corpus, text_field)
        train_text, _ = split_text(text, seq_len)
        self.tokenizer = build_tokenizer(tokenizer, train_text, vocab_size, tokenizer_file)
        self.corpus = TextCorpus(text, seq_len, tokenizer=None if tokenizer == "bytes" else self.tokenizer)
        self.vocab_size, self.seq_len = self.tokenizer.vocab_size, seq_len
        self.seed, self.n_eval, self.positions, self.eval_batch = seed, n_eval, positions, eval_batch
        self._token_bytes = _BYTES if tokenizer == "bytes" else self.tokenizer.token_bytes()

    def sample(self, split: str, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self.corpus.sample(split, n, generator)

    def _eval_windows(self) -> tuple[Tensor, Tensor]:
        return self.corpus.sample("val", self.n_eval, torch.Generator().manual_seed(10_000 + self.seed))

    @staticmethod
    def recall_mask(x: Tensor, y: Tensor, token_bytes: list[bytes] | None = None) -> Tensor:
        """True at positions whose *target* token carries a byte of a name seen earlier in
        the window, after the name's first letter (which even a perfect reader cannot
        know). ``x, y``: ``(n, T)`` inputs and targets; ``token_bytes``: the bytes of each
        id (default: ids are bytes). Returns ``(n, T)`` bool."""
        token_bytes = token_bytes or _BYTES
        mask = torch.zeros_like(y, dtype=torch.bool)
        for r in range(len(x)):
            pieces = [token_bytes[t] for t in [int(x[r, 0])] + y[r].tolist()]  # piece i+1 is target i
            window = b"".join(pieces)
            hot = bytearray(len(window))  # 1 on bytes of a repeated name after its first letter
            seen = set()
            for m in _NAME.finditer(window):
                if m.group() in seen:
                    hot[m.start() + 1:m.end()] = b"\x01" * (m.end() - m.start() - 1)
                seen.add(m.group())
            if not any(hot):
                continue
            start = len(pieces[0])
            for i, p in enumerate(pieces[1:]):
                mask[r, i] = any(hot[start:start + len(p)])
                start += len(p)
        return mask

    @torch.no_grad()
    def _losses(self, model, device) -> tuple[Tensor, Tensor, Tensor]:
        x, y = self._eval_windows()
        out = []
        for i in range(0, len(x), self.eval_batch):
            logits = model(x[i:i + self.eval_batch].to(device)).float()
            out.append(F.cross_entropy(logits.transpose(1, 2), y[i:i + self.eval_batch].to(device),
                                       reduction="none").cpu())
        return torch.cat(out), x, y  # (n, T) per-token loss

    def evaluate(self, model, device) -> dict[str, float]:
        loss, x, y = self._losses(model, device)
        mask = self.recall_mask(x, y, self._token_bytes)
        return {"lm_recall_loss": loss[mask].mean().item() if mask.any() else float("nan")}

    def final_metrics(self, model, device) -> list[Record]:
        loss, x, y = self._losses(model, device)
        mask = self.recall_mask(x, y, self._token_bytes)
        n_bytes = torch.tensor([len(b) for b in self._token_bytes])[y].sum()
        recs = [{"metric": "val_loss", "value": loss.mean().item()},
                {"metric": "val_loss_per_byte", "value": (loss.sum() / n_bytes).item()}]
        if mask.any():
            recs.append({"metric": "recall_loss", "value": loss[mask].mean().item()})
        edges = torch.linspace(0, self.seq_len, self.positions + 1).long().tolist()
        for a, b in zip(edges, edges[1:]):
            recs.append({"metric": "loss_by_position", "value": loss[:, a:b].mean().item(), "position": b})
        return recs
