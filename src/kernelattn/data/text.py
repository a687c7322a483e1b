"""Language-modelling data from text: a byte-level corpus with random windows."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["TextCorpus", "read_corpus"]


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


class TextCorpus:
    """Byte-level language modelling over a text, split into train/val by position.

    Args:
        text: the corpus.
        seq_len: window length T.
        val_fraction: tail fraction held out for validation.
    """

    vocab_size = 256

    def __init__(self, text: str, seq_len: int, val_fraction: float = 0.1):
        data = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)
        n_val = max(seq_len + 2, int(len(data) * val_fraction))
        if len(data) - n_val < seq_len + 2:
            raise ValueError(f"corpus of {len(data)} bytes is too small for seq_len={seq_len} "
                             f"(need at least {2 * (seq_len + 2)})")
        self.seq_len = seq_len
        self.splits = {"train": data[:-n_val], "val": data[-n_val:]}

    def sample(self, split: str, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        data = self.splits[split]
        starts = torch.randint(0, len(data) - self.seq_len - 1, (n,), generator=generator)
        offs = torch.arange(self.seq_len + 1)
        win = data[starts[:, None] + offs].long()  # (n, T+1)
        return win[:, :-1], win[:, 1:]
