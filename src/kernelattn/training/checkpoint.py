"""Atomic checkpoints: everything needed to continue a run exactly where it stopped."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "CheckpointError", "REQUIRED_KEYS"]

#: What a checkpoint written by :class:`kernelattn.training.Trainer` always holds.
REQUIRED_KEYS = ("model", "optimizer", "step", "rng", "config")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read back: damaged, empty, a folder, or not ours."""


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` with ``torch.save`` to a temp file in the same folder, fsync, rename.

    A crash at any moment leaves either the previous checkpoint or the new one, never a
    torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | Path, map_location="cpu", mmap: bool = False, required=("step",)) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` and check that it is one.

    Args:
        path: the ``ckpt.pt`` file.
        map_location: as in ``torch.load``.
        mmap: map the file instead of reading it (cheap when only ``step`` is needed).
        required: keys the loaded dict must have (the trainer asks for
            :data:`REQUIRED_KEYS`; ``step`` is a non-negative int whenever required).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is a folder, empty, truncated, not a ``torch.save``
            file, or holds something other than a training checkpoint. (Writes are
            atomic, so this means the file was damaged or replaced after it was written.)
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    fix = "restore it from a copy, or delete it to restart from step 0 (`kernelattn train --resume` then starts over)"
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a file; {fix}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes); {fix}")
    try:
        # weights_only=False: the checkpoint holds Python and numpy RNG states; kernelattn only
        # loads files it wrote itself (never load a checkpoint from an untrusted source).
        try:
            state = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            # mmap reads only the zip format; read the file plainly for the real error (or a legacy file)
            state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - a torn or foreign file raises many types; name it
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged or not a torch checkpoint "
                              f"({type(e).__name__}: {first}); {fix}") from None
    missing = [k for k in required if k not in state] if isinstance(state, dict) else list(required) or ["(a dict)"]
    if missing:
        what = type(state).__name__ if not isinstance(state, dict) else f"a dict without {', '.join(missing)}"
        raise CheckpointError(f"checkpoint {str(path)!r} holds {what}, not a kernelattn training checkpoint; {fix}")
    step = state.get("step", 0)
    if "step" in required and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise CheckpointError(f"checkpoint {str(path)!r} has step={step!r}, not a step count; {fix}")
    return state
