"""Exceptions raised by the storage layer."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage error."""


class MigrationError(StorageError):
    """The database schema could not be brought up to date."""


class CollectionExistsError(StorageError):
    """A collection with this name already exists."""


class CollectionNotFoundError(StorageError):
    """No collection with this name or id."""


class CodecNotFoundError(StorageError):
    """No codec with this id or content hash."""


class ItemNotFoundError(StorageError):
    """No item with this id in the collection."""


class DuplicateItemError(StorageError):
    """An item with the same content hash is already stored in the collection.

    Raised from a failed statement: the caller must roll the transaction back.
    """


class CorruptCodesError(StorageError):
    """Stored code bytes do not have the expected length."""


class ApiKeyExistsError(StorageError):
    """An API key with this name or hash already exists."""


class ApiKeyNotFoundError(StorageError):
    """No API key with this name."""


class ConnectionLostError(StorageError):
    """The database dropped the connection a read was using (a server restart, a killed
    backend); a retry on a new connection may succeed."""


class DatabaseNotFoundError(StorageError):
    """There is no semstore database at this URL (and the caller asked not to create one)."""


class DatabaseUnreachableError(StorageError):
    """The database server cannot be reached (refused, unknown host, bad credentials)."""
