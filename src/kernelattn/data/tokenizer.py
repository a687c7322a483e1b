"""Tokenizers for language modelling: raw UTF-8 bytes, or a byte-level BPE trained here.

Both map text to ids and back without loss and can say which bytes each id stands
for (the LM task uses that to find names inside tokens). The BPE is the GPT-2 scheme —
text is split into words by a regular expression, each word's UTF-8 bytes are written
as printable characters (one per byte) and merged by learned pair merges — trained
with the ``tokenizers`` package on the task's own training text, so it needs no
download. Training is deterministic: the same text and vocabulary size give the same
merges and ids.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["ByteTokenizer", "BPETokenizer", "build_tokenizer", "TOKENIZERS"]

TOKENIZERS = ("bytes", "bpe")


class ByteTokenizer:
    """One id per UTF-8 byte (ids 0–255)."""

    kind = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self) -> list[bytes]:
        """The bytes each id stands for, indexed by id."""
        return [bytes([i]) for i in range(256)]


def _byte_chars() -> dict[str, int]:
    """The printable character that byte-level BPE writes for each byte, inverted (char → byte).

    Bytes that are already visible, non-space characters keep their own code point; the
    others (controls, space, DEL, non-breaking space, soft hyphen …) are moved, in
    order, to code points 256, 257, … so that every byte is a single visible character.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, moved = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + moved)] = b
            moved += 1
    return chars


class BPETokenizer:
    """Byte-level BPE with ``vocab_size`` ids (256 single bytes, then merges).

    Build one with :meth:`train` or :meth:`load`. Any text encodes (every byte has an
    id), and ``decode(encode(text)) == text``.
    """

    kind = "bpe"

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, text: str, vocab_size: int, min_frequency: int = 2) -> "BPETokenizer":
        """Learn merges on ``text`` until ``vocab_size`` ids (fewer if the text runs out of
        pairs seen ``min_frequency`` times)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size <= 256:
            raise ValueError(f"vocab_size must be > 256 for tokenizer='bpe' (256 byte ids + merges), got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
        # paragraphs as training units: the trainer counts words, so this only bounds memory
        tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> "BPETokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self._tok.save(str(path))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])

    def token_bytes(self) -> list[bytes]:
        """The bytes each id stands for, indexed by id."""
        chars = _byte_chars()
        return [bytes(chars[c] for c in self._tok.id_to_token(i)) for i in range(self.vocab_size)]

    def fingerprint(self) -> str:
        """A short hash of the vocabulary and merges (equal tokenizers, equal fingerprints)."""
        return hashlib.blake2b(self._tok.to_str().encode(), digest_size=8).hexdigest()


_TRAINED: dict[tuple[str, int], BPETokenizer] = {}  # (text hash, vocab size) -> tokenizer, per process


def build_tokenizer(kind: str, text: str = "", vocab_size: int | None = None, path: str | Path | None = None):
    """The tokenizer named ``kind`` (``"bytes"`` or ``"bpe"``).

    For ``"bpe"``: loaded from ``path`` if that file exists (its vocabulary size must
    equal ``vocab_size`` when given), else trained on ``text`` with ``vocab_size`` ids
    (default 1024) and written to ``path`` if given. Training is deterministic, and
    cached per process, so runs that share a corpus share the tokenizer.
    """
    if kind not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {kind!r}")
    if kind == "bytes":
        if vocab_size not in (None, 256):
            raise ValueError(f"tokenizer='bytes' has 256 ids; drop vocab_size={vocab_size} or use tokenizer='bpe'")
        return ByteTokenizer()
    if path is not None and Path(path).exists():
        tok = BPETokenizer.load(path)
        if vocab_size is not None and tok.vocab_size != vocab_size:
            raise ValueError(f"tokenizer file {str(path)!r} has {tok.vocab_size} ids, not vocab_size={vocab_size}; "
                             "delete it to retrain, or set vocab_size to match")
        return tok
    vocab_size = 1024 if vocab_size is None else int(vocab_size)
    key = (hashlib.blake2b(text.encode(), digest_size=16).hexdigest(), vocab_size)
    if key not in _TRAINED:
        if not text:
            raise ValueError("tokenizer='bpe' needs training text (or an existing tokenizer file)")
        _TRAINED[key] = BPETokenizer.train(text, vocab_size)
    tok = _TRAINED[key]
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tok.save(path)
    return tok
