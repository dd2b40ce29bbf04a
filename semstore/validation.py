"""Checks on user text and metadata, run before anything is written.

Every string that reaches the database must be storable and readable back on SQLite and
PostgreSQL: valid Unicode (no unpaired surrogates, which neither UTF-8 nor JSONB can hold),
no NUL characters (PostgreSQL's text and JSONB refuse them). Metadata is a JSON object of
bounded size and depth with finite numbers. The errors are ``ValueError`` subclasses
naming the offending field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

#: Longest metadata key, and longest metadata string value, in characters.
MAX_KEY_CHARS = 256
MAX_TEXT_CHARS = 4096
#: Deepest nesting of metadata objects and lists.
MAX_DEPTH = 16
#: Largest metadata object of one item, as compact JSON.
MAX_METADATA_BYTES = 64 * 1024
_SURROGATES = re.compile("[\ud800-\udfff]")
#: Integers must fit in 64 bits (JSONB numerics would take more, SQLite's JSON would not).
_INT64 = 2**63


class InvalidTextError(ValueError):
    """A string cannot be stored: unpaired surrogate, NUL character, or too long."""


class InvalidMetadataError(ValueError):
    """Metadata is not a bounded JSON object of storable strings and finite numbers."""


def check_text(value: object, field: str, *, max_chars: int | None = None, allow_empty: bool = True) -> str:
    """Return ``value`` if it is a storable string, else raise :class:`InvalidTextError`."""
    if not isinstance(value, str):
        raise InvalidTextError(f"{field} must be a string, got {type(value).__name__}")
    if not allow_empty and not value:
        raise InvalidTextError(f"{field} must not be empty")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidTextError(f"{field} is longer than {max_chars} characters")
    if "\x00" in value:
        raise InvalidTextError(f"{field} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTextError(f"{field} contains an unpaired surrogate (not valid Unicode)") from None
    return value


def check_metadata(metadata: object, field: str = "metadata") -> dict[str, Any]:
    """A copy of ``metadata`` if it is a storable JSON object, else raise :class:`InvalidMetadataError`.

    Keys are non-empty strings of at most :data:`MAX_KEY_CHARS` characters; values are
    null, booleans, 64-bit integers, finite floats, strings of at most :data:`MAX_TEXT_CHARS`
    characters, or lists and objects of these, nested at most :data:`MAX_DEPTH` deep; the
    whole object takes at most :data:`MAX_METADATA_BYTES` bytes as JSON.
    """
    if not isinstance(metadata, Mapping):
        raise InvalidMetadataError(f"{field} must be a JSON object, got {type(metadata).__name__}")
    try:
        checked = _check_value(dict(metadata), field, 0)
        size = len(json.dumps(checked, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    except InvalidTextError as exc:
        raise InvalidMetadataError(str(exc)) from None
    if size > MAX_METADATA_BYTES:
        raise InvalidMetadataError(f"{field} takes {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed")
    return checked


def _check_value(value: Any, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise InvalidMetadataError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise InvalidMetadataError(f"{where} is an integer outside the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMetadataError(f"{where} must be a finite number")
        return value
    if isinstance(value, str):
        return check_text(value, where, max_chars=MAX_TEXT_CHARS)
    if isinstance(value, list | tuple):
        return [_check_value(item, f"{where}[{number}]", depth + 1) for number, item in enumerate(value)]
    if isinstance(value, Mapping):
        checked: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidMetadataError(f"{where} has a key that is not a string: {key!r}")
            shown = f"{where}[{key[:40]!r}]"
            check_text(key, f"a key of {where}", max_chars=MAX_KEY_CHARS, allow_empty=False)
            checked[key] = _check_value(item, shown, depth + 1)
        return checked
    raise InvalidMetadataError(f"{where} holds a {type(value).__name__}, which is not a JSON value")


def readable(value: Any) -> Any:
    """``value`` with every unpaired surrogate in its strings replaced by U+FFFD.

    For data stored before text was checked: such a string cannot be encoded as UTF-8,
    so without this one poisoned item would break every response that contains it.
    """
    if isinstance(value, str):
        if value.isascii():
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _SURROGATES.sub("\ufffd", value)
        return value
    if isinstance(value, dict):
        return {readable(key): readable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [readable(item) for item in value]
    return value
