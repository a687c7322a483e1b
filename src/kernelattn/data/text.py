"""Language-modelling data from text: a tokenized corpus (bytes by default) with random windows."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["TextCorpus", "read_corpus", "split_text"]


def read_corpus(path: str | Path, text_field: str = "text", max_bytes: int | None = None) -> str:
    """Read a plain-text file, a ``.jsonl`` file (one JSON object per line with ``text_field``),
    or a folder of such files (sorted, concatenated with blank lines)."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"data path {str(p)!r} does not exist")
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".txt", ".jsonl", ".json", "")) \
        if p.is_dir() else [p]
    if not files:
        raise ValueError(f"data path {str(p)!r} holds no .txt or .jsonl files")
    parts, size = [], 0
    for f in files:
        if f.suffix in (".jsonl", ".json"):
            with open(f, encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{f}:{i + 1}: not valid JSON ({e.msg})") from None
                    if not isinstance(obj, dict) or text_field not in obj:
                        raise ValueError(f"{f}:{i + 1}: expected an object with a {text_field!r} field")
                    parts.append(str(obj[text_field]))
                    size += len(parts[-1])
                    if max_bytes and size >= max_bytes:
                        break
        else:
            parts.append(f.read_text(encoding="utf-8", errors="replace"))
            size += len(parts[-1])
        if max_bytes and size >= max_bytes:
            break
    text = "\n\n".join(parts)
    return text[:max_bytes] if max_bytes else text


def split_text(text: str, seq_len: int, val_fraction: float = 0.1) -> tuple[str, str]:
    """Train and validation parts of a text: the last ``val_fraction`` (at least
    ``seq_len + 2`` characters) is held out. The split is by characters, so for ASCII
    text it is the byte split of the byte-level corpus."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(seq_len + 2, int(len(text) * val_fraction))
    if len(text) - n_val < seq_len + 2:
        raise ValueError(f"corpus of {len(text)} characters is too small for seq_len={seq_len} "
                         f"(need at least {2 * (seq_len + 2)})")
    return text[:-n_val], text[-n_val:]


class TextCorpus:
    """Language modelling over a text, split into train/val by position, then tokenized.

    Args:
        text: the corpus.
        seq_len: window length T (in tokens).
        val_fraction: tail fraction of the text held out for validation.
        tokenizer: anything with ``encode(str) -> list[int]`` and ``vocab_size``
            (:mod:`kernelattn.data.tokenizer`); ``None`` = UTF-8 bytes. A trained
            tokenizer should have been trained on the training part only
            (:func:`split_text`).
    """

    vocab_size = 256  #: byte ids; an instance with a tokenizer has the tokenizer's size

    def __init__(self, text: str, seq_len: int, val_fraction: float = 0.1, tokenizer=None):
        train, val = split_text(text, seq_len, val_fraction)
        self.seq_len = seq_len
        if tokenizer is not None:
            self.vocab_size = tokenizer.vocab_size
        self.splits = {}
        for name, part in (("train", train), ("val", val)):
            if tokenizer is None:
                ids = torch.frombuffer(bytearray(part.encode("utf-8")), dtype=torch.uint8)
            else:
                ids = torch.tensor(tokenizer.encode(part), dtype=torch.int32)
            if len(ids) < seq_len + 2:
                raise ValueError(f"the {name} part of the corpus is {len(ids)} tokens, too few for seq_len={seq_len}; "
                                 "use a larger corpus or a smaller seq_len")
            self.splits[name] = ids

    def sample(self, split: str, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` random windows: inputs and next-token targets, both ``(n, seq_len)`` int64."""
        data = self.splits[split]
        starts = torch.randint(0, len(data) - self.seq_len - 1, (n,), generator=generator)
        offs = torch.arange(self.seq_len + 1)
        win = data[starts[:, None] + offs].long()  # (n, T+1)
        return win[:, :-1], win[:, 1:]
