"""One process per run folder: an OS-level lock on ``FOLDER/.lock``.

Two processes training into one folder would interleave their metrics and overwrite
each other's checkpoints, so ``kernelattn train`` locks its ``run.out_dir`` and
``kernelattn reproduce`` its ``--out`` (and each run folder of the sweep). The lock is
``flock`` (``msvcrt.locking`` on Windows) on an open file, so the operating system
releases it when the holder dies, however it dies: a killed run never leaves a stale
lock behind. The file keeps the holder's PID and command line for the error message.

Locks are re-entrant within a process (the CLI takes the lock before building the
model, the trainer takes it again): a second ``flock`` on another descriptor of the
same file would otherwise block the process on itself.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

__all__ = ["RunLocked", "RunLock", "lock_folder"]

LOCK_NAME = ".lock"

_held: dict[str, list] = {}  # resolved path -> [file object, count]
_guard = threading.Lock()


class RunLocked(ValueError):
    """The folder is locked by another live process (the message names it)."""


def _try_lock(fh) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another process"
    pid, _, cmd = text.partition("\n")
    return f"process {pid} ({cmd})" if pid.isdigit() else "another process"


class RunLock:
    """Hold the lock of ``folder`` (created if missing) until :meth:`release`; a context manager.

    Args:
        folder: the run folder or sweep folder to lock.
        what: how the error names the folder (``run.out_dir``, ``--out``).

    Raises:
        RunLocked: another live process holds the lock.
        OSError: the folder cannot be created or written (the caller names the option).
    """

    def __init__(self, folder: str | Path, what: str = "the folder"):
        self.folder, self.what = Path(folder), what
        self._key: str | None = None

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        key = str(path.resolve())
        with _guard:
            if key in _held:
                _held[key][1] += 1
                self._key = key
                return self
            fh = open(path, "a+")
            if not _try_lock(fh):
                fh.close()
                raise RunLocked(f"{self.what}={str(self.folder)!r} is in use by {_holder(path)}; wait for it to "
                                f"finish or stop it (the lock is released when that process exits)")
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n{' '.join(['kernelattn', *sys.argv[1:]])[:200]}\n")
            fh.flush()
            _held[key] = [fh, 1]
            self._key = key
        return self

    def release(self) -> None:
        with _guard:
            if self._key is None or self._key not in _held:
                return
            entry = _held[self._key]
            entry[1] -= 1
            if entry[1] == 0:
                # Closing the descriptor drops the lock; the file stays (deleting it would let a
                # third process lock a fresh inode while a second still waits on the old one).
                entry[0].close()
                del _held[self._key]
            self._key = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_folder(folder: str | Path, what: str = "the folder") -> RunLock:
    """``RunLock(folder, what).acquire()``."""
    return RunLock(folder, what).acquire()
