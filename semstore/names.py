"""Names that become file-system paths: collection names, and folders built from them.

A collection name is part of two folders (its kept uploads and its saved index), so it is
restricted to a strict pattern, and every folder built from user text is resolved and
checked to stay strictly inside its parent: even a name stored before these rules (``..``,
``a/b``) can never address the data directory itself or anything outside it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: A letter or digit, then up to 127 letters, digits, '.', '_' or '-' (so never '.' or '..').
COLLECTION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_COLLECTION_NAME_CHARS = 128

_COLLECTION_NAME = re.compile(COLLECTION_NAME_PATTERN)


class InvalidNameError(ValueError):
    """A collection name does not match :data:`COLLECTION_NAME_PATTERN`."""


class UnsafePathError(ValueError):
    """A path built from a name would leave (or be) its parent folder."""


def is_valid_collection_name(name: object) -> bool:
    """Whether ``name`` may name a new collection."""
    return isinstance(name, str) and _COLLECTION_NAME.fullmatch(name) is not None


def check_collection_name(name: object) -> str:
    """Return ``name`` if it is a valid collection name, else raise :class:`InvalidNameError`."""
    if not is_valid_collection_name(name):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 40 else repr(name[:40]) + "..."
        raise InvalidNameError(
            f"invalid collection name {shown}: use 1-{MAX_COLLECTION_NAME_CHARS} ASCII letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    assert isinstance(name, str)
    return name


def child_folder(parent: Path, component: str) -> Path:
    """``parent / component``, checked to be a folder strictly inside ``parent``.

    Raises :class:`UnsafePathError` when ``component`` is empty, ``.``/``..``, holds a path
    separator or NUL, or resolves (symlinks followed) to ``parent`` itself or outside it.
    """
    if (
        not component
        or component in (".", "..")
        or "/" in component
        or "\\" in component
        or "\x00" in component
        or (os.altsep and os.altsep in component)
    ):
        raise UnsafePathError(f"{component!r} cannot name a folder")
    base = Path(os.path.realpath(parent))
    candidate = Path(os.path.realpath(base / component))
    if candidate == base or not candidate.is_relative_to(base):
        raise UnsafePathError(f"{component!r} would leave {base}")
    return parent / component
