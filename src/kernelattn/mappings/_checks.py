"""Kept for imports inside the package: the checks live in :mod:`kernelattn._validation`."""

from .._validation import check_alpha, check_positive_int, check_scores, compute_dtype  # noqa: F401
