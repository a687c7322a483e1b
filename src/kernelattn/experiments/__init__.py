"""Experiments: runnable studies built on the library's layers below."""
