"""Data sources for training: the batch interface, text corpora, the built-in stories."""

from .base import IGNORE, BatchSource, step_generator
from .stories import generate_stories, make_name
from .text import TextCorpus, read_corpus

__all__ = ["BatchSource", "step_generator", "IGNORE", "TextCorpus", "read_corpus", "generate_stories", "make_name"]
