"""Language modelling on the built-in stories or a user's corpus, byte-level.

Metrics: validation loss (nats per byte), loss by position in the window, and
``recall_loss`` — the loss on the bytes of capitalised words (names) that already
appeared earlier in the same window, after their first letter. In the built-in stories
those are the invented character names, which can only be predicted by recalling them
from context; on any corpus they are mostly proper nouns.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor
from torch.nn import functional as F

from ..data import TextCorpus, generate_stories, read_corpus
from .base import Record

__all__ = ["LMTask"]

_NAME = re.compile(rb"\b[A-Z][a-z]{3,}\b")


class LMTask:
    """Byte-level next-token prediction.

    Args:
        seq_len: window length.
        corpus: ``"stories"`` (built-in, generated offline) or a path to a text file, a
            folder, or JSONL with a ``text_field``.
        n_stories: stories generated for the built-in corpus.
        n_eval: validation windows for the final metrics.
        positions: number of position buckets for ``loss_by_position``.
    """

    name = "lm"
    primary = "val_loss"

    def __init__(self, seq_len: int = 128, corpus: str = "stories", seed: int = 0, n_stories: int = 2000,
                 text_field: str = "text", n_eval: int = 64, positions: int = 8, eval_batch: int = 16):
        text = generate_stories(n_stories, seed=1000 + seed) if corpus == "stories" else read_corpus(corpus, text_field)
        self.corpus = TextCorpus(text, seq_len)
        self.vocab_size, self.seq_len = TextCorpus.vocab_size, seq_len
        self.seed, self.n_eval, self.positions, self.eval_batch = seed, n_eval, positions, eval_batch

    def sample(self, split: str, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self.corpus.sample(split, n, generator)

    def _eval_windows(self) -> tuple[Tensor, Tensor]:
        return self.corpus.sample("val", self.n_eval, torch.Generator().manual_seed(10_000 + self.seed))

    @staticmethod
    def recall_mask(x: Tensor, y: Tensor) -> Tensor:
        """True at positions whose *target* byte is inside a name seen earlier in the window
        (excluding the name's first letter, which even a perfect reader cannot know)."""
        mask = torch.zeros_like(y, dtype=torch.bool)
        for r in range(len(x)):
            window = bytes(torch.cat([x[r, :1], y[r]]).tolist())  # window[i+1] is target i
            seen = set()
            for m in _NAME.finditer(window):
                w = m.group()
                if w in seen:
                    s, e = m.start() + 1, m.end()  # bytes after the first letter
                    mask[r, max(s - 1, 0):e - 1] = True
                seen.add(w)
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
        mask = self.recall_mask(x, y)
        return {"lm_recall_loss": loss[mask].mean().item() if mask.any() else float("nan")}

    def final_metrics(self, model, device) -> list[Record]:
        loss, x, y = self._losses(model, device)
        mask = self.recall_mask(x, y)
        recs = [{"metric": "val_loss", "value": loss.mean().item()}]
        if mask.any():
            recs.append({"metric": "recall_loss", "value": loss[mask].mean().item()})
        edges = torch.linspace(0, self.seq_len, self.positions + 1).long().tolist()
        for a, b in zip(edges, edges[1:]):
            recs.append({"metric": "loss_by_position", "value": loss[:, a:b].mean().item(), "position": b})
        return recs
