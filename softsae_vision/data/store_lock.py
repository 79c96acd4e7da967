"""An exclusive lock on a store folder, held for the whole life of an extraction into it.

Two ``softsae extract`` runs into one ``--out`` would interleave their records; the second one
fails at once instead, naming the process that holds the lock. The lock is ``flock`` on
``STORE/.lock`` (released by the kernel if the holder dies, so a killed run never leaves a stale
lock); the file holds the holder's pid, host and start time for the message.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from pathlib import Path

from softsae_vision.data.store_format import LOCK_FILE
from softsae_vision.errors import SoftSAEError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

logger = logging.getLogger(__name__)


class StoreLock:
    """``with StoreLock(folder, name):`` holds ``folder/name`` exclusively or fails at once."""

    def __init__(self, folder: Path, name: str = LOCK_FILE):
        self.path = Path(folder) / name
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        """Take the lock; a SoftSAEError naming the holder if another process has it."""
        if fcntl is None:  # pragma: no cover
            logger.warning("no file locking on this platform: do not run two extractions at once")
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:
                raise SoftSAEError(
                    f"cannot create the lock file {self.path}: {err.strerror}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
                os.close(fd)
                raise SoftSAEError(
                    f"{self.path.parent} is being written by another extraction "
                    f"({holder or 'a process that is just starting'}); wait for it to finish, "
                    "or pass another --out"
                ) from None
            try:  # the previous holder may have removed the file between our open and flock
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and let go of the lock."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # still ours: others re-check the inode after flock
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
