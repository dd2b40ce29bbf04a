"""Confining ingest-by-path to allowed root folders (for requests from untrusted clients).

Every path is resolved (symlinks followed, ``..`` collapsed) before it is compared with
the resolved roots, so neither traversal nor a symlink pointing outside a root gets
through; files found inside a given folder are checked one by one the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from semstore.ingest.pipeline import FailedSource
from semstore.ingest.sources import iter_image_files


class PathNotAllowedError(ValueError):
    """A requested path is malformed, outside every allowed root, or does not exist."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{reason}: {path!r}")
        self.path = path
        self.reason = reason


@dataclass
class ConfinedFiles:
    """Image files found under the requested paths, and those refused for leaving the roots."""

    files: list[Path] = field(default_factory=list)
    refused: list[FailedSource] = field(default_factory=list)


def confine_paths(paths: Sequence[str], roots: Sequence[str | os.PathLike[str]], *, max_files: int | None = None) -> ConfinedFiles:
    """The image files under ``paths`` (files or folders, recursive) that lie inside ``roots``.

    Raises :class:`PathNotAllowedError` for a requested path that contains a NUL byte, is
    not absolute, resolves outside every root, or does not exist (checked in that order, so
    the answer never tells whether a path outside the roots exists), and when more than
    ``max_files`` files are found. A file inside a requested folder that resolves outside
    the roots (a symlink) is listed in ``refused`` instead.
    """
    resolved_roots = [Path(os.path.realpath(root)) for root in roots]
    if not resolved_roots:
        raise PathNotAllowedError("", "ingest by path is disabled (no allowed roots are configured)")
    requested: list[Path] = []
    for raw in paths:
        if "\x00" in raw:
            raise PathNotAllowedError(raw.replace("\x00", "\\0"), "path contains a NUL byte")
        if not raw or not os.path.isabs(raw):
            raise PathNotAllowedError(raw, "path must be absolute")
        resolved = Path(os.path.realpath(raw))
        if not _inside(resolved, resolved_roots):
            raise PathNotAllowedError(raw, "path is outside the allowed roots")
        if not resolved.exists():
            raise PathNotAllowedError(raw, "no such file or folder")
        requested.append(resolved)
    result = ConfinedFiles()
    for candidate in iter_image_files(requested):
        if not _inside(Path(os.path.realpath(candidate)), resolved_roots):
            result.refused.append(FailedSource(str(candidate), "outside the allowed roots"))
            continue
        result.files.append(candidate)
        if max_files is not None and len(result.files) > max_files:
            raise PathNotAllowedError(raw, f"more than {max_files} files under the requested paths")
    return result


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)
