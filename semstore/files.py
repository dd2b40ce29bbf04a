"""Private files and folders: everything semstore writes is readable by its owner only.

Folders are created 0700 and files 0600 whatever the process umask, because the data
directory holds the database (API key hashes, metadata), kept uploads and indexes.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_folder(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its missing parents as 0700 folders (existing ones are left as they are)."""
    folder = Path(path)
    missing: list[Path] = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for candidate in reversed(missing):
        try:
            candidate.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(candidate, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask
    return folder


def create_private_file(path: str | os.PathLike[str]) -> bool:
    """Create an empty 0600 file at ``path`` unless it exists; True when it was created."""
    target = Path(path)
    private_folder(target.parent)
    try:
        handle = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    os.close(handle)
    return True


def write_atomically(path: str | os.PathLike[str], data: bytes, *, temp_prefix: str = ".tmp-") -> Path:
    """Write ``data`` to ``path`` (0600) through a fsynced temp file in the same folder and a rename.

    A crash leaves either no file or the whole file at ``path`` (and possibly a temp file
    named ``<temp_prefix>...`` for a later clean-up).
    """
    target = Path(path)
    private_folder(target.parent)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix)  # mkstemp creates 0600
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def read_regular_file(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file at ``path``, refusing anything else.

    The last component must not be a symlink (resolve the path first), and devices, FIFOs,
    sockets and folders are refused without reading (``/dev/zero`` never streams). Raises
    ``OSError`` when the file cannot be opened or is not a regular file, and when it holds
    more than ``max_bytes`` bytes.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    handle = os.open(path, flags)  # O_NONBLOCK: opening a FIFO must not wait for a writer
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if max_bytes is not None and info.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes", str(path))
        chunks: list[bytes] = []
        remaining = (info.st_size if max_bytes is None else max_bytes) + 1  # one more tells "it grew"
        while remaining > 0:
            chunk = os.read(handle, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(handle)
    if max_bytes is not None and len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes", str(path))
    return data


def is_inside(path: str | os.PathLike[str], roots: Sequence[str | os.PathLike[str]]) -> bool:
    """Whether ``path``, resolved (symlinks followed), lies in one of the resolved ``roots``."""
    resolved = Path(os.path.realpath(path))
    for root in roots:
        base = Path(os.path.realpath(root))
        if resolved == base or resolved.is_relative_to(base):
            return True
    return False
