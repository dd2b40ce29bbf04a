"""Turning user-given paths (files, folders, lists) into an ordered stream of image files."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from semstore.ingest.images import IMAGE_EXTENSIONS


class SourceNotFoundError(FileNotFoundError):
    """A path given to ingest does not exist."""


def iter_image_files(sources: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> Iterator[Path]:
    """Yield image files from files and folders (recursive), each once, folders in sorted order.

    Files named explicitly are yielded whatever their extension (a bad one is reported by the
    decoder); inside folders only files with an image extension are considered. Raises
    :class:`SourceNotFoundError` before yielding anything if a source does not exist.
    """
    items = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    paths = [Path(item).expanduser() for item in items]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SourceNotFoundError(f"no such file or folder: {', '.join(missing)}")
    seen: set[Path] = set()
    for path in paths:
        candidates = _walk(path) if path.is_dir() else iter([path])
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved not in seen:
                seen.add(resolved)
                yield resolved


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                yield Path(root) / name
