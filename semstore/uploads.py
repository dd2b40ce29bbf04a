"""The kept originals of a collection's uploads: one file per content hash in its own folder.

An image added as bytes is stored with the source URI ``upload://<content hash>/<file name>``
and its bytes are kept as ``<folder>/<content hash><suffix>`` so that thumbnails can be made.

Write order: the file is written (atomically, through a ``.upload-*`` temp file) before its
item commits, so an acknowledged item always has its original. A crash between the two
leaves an unreferenced file (or a temp file) behind: writers hold a shared ``flock`` on the
folder's ``.lock`` file while they write and commit, and :meth:`UploadStore.clean` removes
those leftovers only while it holds that lock exclusively, that is when no writer of any
process is between the two steps.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from semstore.files import private_folder, write_atomically
from semstore.ingest.images import IMAGE_EXTENSIONS, content_hash

#: Scheme of the source URIs of images added as bytes: ``upload://<content hash>/<file name>``.
UPLOAD_SCHEME = "upload://"

# 32 hex: content_hash() since schema 0002; 64 hex: the full SHA-256 in URIs stored before it.
_UPLOAD_URI = re.compile(r"^upload://([0-9a-f]{32}|[0-9a-f]{64})/(.*)$", re.DOTALL)
_KEPT_FILE = re.compile(r"^([0-9a-f]{32}|[0-9a-f]{64})(\.[a-z]+)?$")
_TEMP_PREFIX = ".upload-"
_LOCK_NAME = ".lock"
_MAX_NAME_CHARS = 200

#: Characters removed from client file names: controls, and the Unicode bidi controls
#: that make a name display differently from what it is ("gpj.exe" shown as "exe.jpg").
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_file_name(name: str) -> str:
    """The base name of a client file name, safe to store and show.

    Only the last path component is kept (no client folders); control characters, bidi
    controls, unpaired surrogates and other unassigned or private code points are removed;
    the result is NFC-normalised and cut to 200 characters; an empty result is ``image``.
    """
    base = PurePosixPath(name.replace("\\", "/")).name
    kept = "".join(
        ch for ch in base if ch not in _BIDI_CONTROLS and unicodedata.category(ch) not in ("Cc", "Cs", "Cn", "Co")
    )
    kept = unicodedata.normalize("NFC", kept)[:_MAX_NAME_CHARS]
    return kept if kept.strip() not in ("", ".", "..") else "image"


def upload_uri(name: str, data: bytes) -> str:
    """The source URI of an image added as bytes: ``upload://<content_hash(data)>/<clean name>``."""
    return f"{UPLOAD_SCHEME}{content_hash(data)}/{clean_file_name(name)}"


def is_upload_uri(uri: str) -> bool:
    """Whether ``uri`` names an uploaded image (``upload://<hash>/<name>``)."""
    return _UPLOAD_URI.match(uri) is not None


class UploadStore:
    """The folder of one collection's kept originals.

    ``folder`` is None when the collection's name cannot safely name a folder (a name stored
    before names were checked): nothing is kept and nothing is read or removed then.
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def path_for(self, uri: str) -> Path | None:
        """Where the kept original of an ``upload://`` URI lives (None for other URIs)."""
        match = _UPLOAD_URI.match(uri)
        if match is None or self.folder is None:
            return None
        digest, name = match.groups()
        suffix = PurePosixPath(name).suffix.lower()
        return self.folder / f"{digest}{suffix if suffix in IMAGE_EXTENSIONS else ''}"

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the folder's shared lock: :meth:`clean` waits for this block to end."""
        if self.folder is None:
            yield
            return
        with self._locked(fcntl.LOCK_SH):
            yield

    def keep(self, items: Iterable[tuple[str, bytes]]) -> list[Path]:
        """Write ``(uri, bytes)`` originals that are not kept yet; returns the files it created.

        Call inside :meth:`writing`.
        """
        created: list[Path] = []
        try:
            for uri, data in items:
                path = self.path_for(uri)
                if path is not None and path not in created and not path.exists():
                    write_atomically(path, data, temp_prefix=_TEMP_PREFIX)
                    created.append(path)
        except BaseException:
            discard(created)
            raise
        return created

    def remove_all(self) -> None:
        """Delete the whole folder (the collection is gone)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def clean(self, referenced_uris: Callable[[set[str]], set[str]]) -> int | None:
        """Delete temp files and kept files no item refers to; returns how many, None if busy.

        ``referenced_uris(hashes)`` returns the stored source URIs of the items whose content
        hash (32 hex) is among ``hashes``. Runs only when no writer holds the lock (else
        returns None at once), so a file whose item is about to commit is never removed.
        """
        if self.folder is None or not self.folder.is_dir():
            return 0
        try:
            with self._locked(fcntl.LOCK_EX | fcntl.LOCK_NB):
                return self._clean_unlocked(referenced_uris)
        except BlockingIOError:
            return None

    def _clean_unlocked(self, referenced_uris: Callable[[set[str]], set[str]]) -> int:
        assert self.folder is not None
        removed = 0
        kept: dict[str, list[Path]] = {}
        for path in self.folder.iterdir():
            if path.name.startswith(_TEMP_PREFIX):
                path.unlink(missing_ok=True)
                removed += 1
                continue
            match = _KEPT_FILE.match(path.name)
            if match is not None and path.is_file():
                kept.setdefault(match.group(1)[:32], []).append(path)
        hashes = list(kept)
        referenced: set[Path] = set()
        for start in range(0, len(hashes), 900):
            uris = referenced_uris(set(hashes[start : start + 900]))
            referenced.update(path for path in map(self.path_for, uris) if path is not None)
        for paths in kept.values():
            for path in paths:
                if path not in referenced:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    @contextmanager
    def _locked(self, operation: int) -> Iterator[None]:
        assert self.folder is not None
        private_folder(self.folder)
        handle = os.open(self.folder / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(handle, operation)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise BlockingIOError(exc.errno, "the upload folder is busy") from None
                raise
            yield
        finally:
            os.close(handle)  # releases the lock


def discard(paths: Iterable[Path]) -> None:
    """Delete these files if they exist."""
    for path in paths:
        path.unlink(missing_ok=True)
