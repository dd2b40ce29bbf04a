"""API keys of the HTTP server: generated secrets, stored only as SHA-256 hashes.

A key is ``ssk_`` followed by 43 URL-safe characters (256 random bits). Such a secret
cannot be guessed or brute-forced from its hash, so an unsalted SHA-256 is enough and
lets a request's key be found by an indexed lookup. The secret is shown once, when the
key is created, and never stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from semstore import storage

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

Scope = Literal["read", "read-write"]

#: The scopes a key may have; ``read-write`` includes ``read``.
SCOPES: tuple[str, ...] = storage.API_KEY_SCOPES

KEY_PREFIX = "ssk_"
_KEY_PATTERN = re.compile(r"^ssk_[A-Za-z0-9_-]{43}$")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ApiKeyInfo:
    """What is known about a key besides its secret."""

    id: int
    name: str
    scope: str
    created_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, scope: str) -> bool:
        """Whether this key may do what ``scope`` needs (``read-write`` covers ``read``)."""
        return self.scope == "read-write" or self.scope == scope


def generate_api_key() -> str:
    """A new random secret (``ssk_`` + 256 bits, URL-safe base64)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def is_well_formed(secret: str) -> bool:
    """Whether ``secret`` looks like a key this module generates (checked before any lookup)."""
    return bool(_KEY_PATTERN.match(secret))


def hash_api_key(secret: str) -> str:
    """The SHA-256 hex digest stored for ``secret``."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_api_key(sessions: sessionmaker[Session], name: str, scope: str) -> tuple[ApiKeyInfo, str]:
    """Create a key; returns its info and the secret (to show once; only its hash is stored).

    Raises:
        ValueError: bad name or scope.
        semstore.storage.ApiKeyExistsError: the name is taken.
    """
    if not _NAME_PATTERN.match(name):
        raise ValueError(f"invalid API key name {name!r}: use 1-128 letters, digits, '.', '_' or '-'")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    secret = generate_api_key()
    with storage.transaction(sessions) as session:
        row = storage.create_api_key(session, name=name, key_hash=hash_api_key(secret), scope=scope)
        info = _info(row)
    return info, secret


def lookup_api_key(sessions: sessionmaker[Session], secret: str) -> ApiKeyInfo | None:
    """The key (revoked ones included, check :attr:`ApiKeyInfo.revoked`) for ``secret``, or None."""
    if not is_well_formed(secret):
        return None
    with sessions() as session:
        row = storage.find_api_key(session, key_hash=hash_api_key(secret), include_revoked=True)
        return _info(row) if row is not None else None


def touch_api_key(sessions: sessionmaker[Session], key_id: int) -> None:
    """Record that the key was just used."""
    with storage.transaction(sessions) as session:
        storage.touch_api_key(session, key_id=key_id)


def revoke_api_key(sessions: sessionmaker[Session], name: str) -> ApiKeyInfo:
    """Revoke the key called ``name`` (idempotent); raises ``ApiKeyNotFoundError``."""
    with storage.transaction(sessions) as session:
        return _info(storage.revoke_api_key(session, name=name))


def list_api_keys(sessions: sessionmaker[Session]) -> list[ApiKeyInfo]:
    """All keys, revoked ones included, by name."""
    with sessions() as session:
        return [_info(row) for row in storage.list_api_keys(session)]


def _info(row: storage.ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        name=row.name,
        scope=row.scope,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )
