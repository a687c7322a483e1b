"""``python -m kernelattn`` (also what ``torchrun -m kernelattn train ...`` runs)."""

import sys

from .cli import main

sys.exit(main())
