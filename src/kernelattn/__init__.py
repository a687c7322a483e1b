"""kernelattn: sparse attention as compact kernel regression."""

from .mappings import *  # noqa: F401,F403
from .mappings import __all__ as _mappings_all

__version__ = "0.1.0"
__all__ = list(_mappings_all)
