"""Exceptions raised when a saved index cannot be used."""

from __future__ import annotations


class IndexLoadError(Exception):
    """A saved index could not be loaded; rebuild it from the database."""


class IndexNotFoundError(IndexLoadError):
    """No saved index in the directory (no ``config.json``, e.g. a first save never finished)."""


class IndexStaleError(IndexLoadError):
    """The saved index is intact but was built for another codec, layout or database version."""


class IndexCorruptError(IndexLoadError):
    """The saved index is damaged: unreadable config, checksum mismatch, or inconsistent content."""
