"""Atomic file writes and folder locks.

Atomic writes: a reader sees the old file or the new one, never half of one. Folder locks: one
process at a time writes a run or a store; a second one is told who holds it.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import fcntl
import io
import json
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from softsae_vision.errors import SoftSAEError

TMP_SUFFIX = ".tmp"
LOCK_FILE = ".lock"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename the temp file onto ``path``.

    The temp file lives in the same folder (so the rename is atomic) and gets the permissions a
    plain ``open`` would give (mkstemp's are private, but runs and stores are meant to be shared);
    they are set after ``write`` too, since some writers (safetensors) re-create the file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def json_dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` keeping UTF-8 text readable and file names with undecodable bytes lossless.

    Python gives a file name with bytes that are not UTF-8 as a str with lone surrogates
    (``os.fsdecode``); those are written as ``\\udcXX`` escapes, which ``json.loads`` turns back
    into the same str, and ``os.fsencode`` into the original bytes.
    """
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def dumps_pretty(obj: Any, indent: str = "") -> str:
    """JSON with one key per line but short lists of numbers or strings kept on one line."""
    inner = indent + "  "
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json_dumps(str(k))}: {dumps_pretty(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + dumps_pretty(v, inner) for v in obj) + f"\n{indent}]"
    return json_dumps(obj)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, compact: bool = False) -> None:
    """Write ``obj`` as JSON to ``path`` atomically: indented by two spaces, or ``compact``.

    ``compact`` (the activation store's files): one key per line, short lists on one line,
    UTF-8 text kept as is (see :func:`dumps_pretty`).
    """
    text = dumps_pretty(obj) if compact else json.dumps(obj, indent=2)
    write_text_atomic(path, text + "\n")


def write_csv_atomic(
    path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[object]]
) -> Path:
    """Write a CSV table (``header``, then ``rows``) to ``path`` atomically; return the path."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())
    return Path(path)


def write_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, Any]) -> Path:
    """Write named arrays to an uncompressed ``.npz`` file at ``path`` atomically; return it."""
    import numpy as np

    named: dict[str, Any] = {name: np.asarray(value) for name, value in arrays.items()}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **named)

    atomic_write(path, write)
    return Path(path)


def is_temporary(path: str | os.PathLike) -> bool:
    """True for a temp file :func:`atomic_write` leaves behind when killed (``.NAME.XXXX.tmp``)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TMP_SUFFIX) and name.count(".") >= 3


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temp files of interrupted atomic writes in ``folder``; return what was removed.

    Call it only while holding the folder's lock: another writer's temp file is not stale.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        if is_temporary(entry) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _holder(lock_path: Path) -> str:
    """Who holds a lock, from what the holder wrote into the lock file."""
    try:
        info = json.loads(lock_path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet recorded its details"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the ``with`` block.

    The lock is an ``fcntl.flock`` on ``folder/.lock``, released by the kernel when the process
    dies, so a killed run never leaves a stale lock. A second process gets a SoftSAEError naming
    the holder (pid, host, start time). ``what`` names the folder's kind in that message.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SoftSAEError(
                f"{folder} is in use by another {what} ({_holder(lock_path)}); wait for it to "
                "finish or stop it, or choose another output folder"
            ) from None
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield lock_path
    finally:
        os.close(fd)  # releases the flock
