"""Data sources for training: the batch interface, text corpora and tokenizers, the built-in stories."""

from .base import IGNORE, BatchSource, step_generator
from .stories import generate_stories, make_name
from .text import TextCorpus, read_corpus, split_text
from .tokenizer import BPETokenizer, ByteTokenizer, build_tokenizer

__all__ = ["BatchSource", "step_generator", "IGNORE", "TextCorpus", "read_corpus", "generate_stories", "make_name",
           "split_text", "ByteTokenizer", "BPETokenizer", "build_tokenizer"]
