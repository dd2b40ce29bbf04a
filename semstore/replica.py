"""Keeping an in-memory index in step with a database that other processes write to.

Every write bumps the collection's ``revision`` in the same transaction as the rows, so a
replica (a ``semstore serve`` process, or any :class:`~semstore.Collection` that holds
an index) notices changes by polling that counter, and :func:`catch_up` then applies only
the difference: codes of ids above the index's largest id are fetched and added; only
when the count or the sum of ids still disagrees (deletes, or a transaction that
committed late with lower ids) are the ids, 8 bytes per item, compared in full.

The database state is read first, and every later change bumps the revision again, so
the version recorded here is never newer than what the index holds: the next poll
repairs whatever a concurrent writer changed during a catch-up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from semstore import storage
from semstore.index import ADCIndex, IndexVersion

if TYPE_CHECKING:
    from semstore.codec import PQVAECodec

logger = logging.getLogger(__name__)

_SUM_MODULUS = 1 << 64


@dataclass(frozen=True)
class CatchUp:
    """What one :func:`catch_up` did: the version reached, items added and removed."""

    version: IndexVersion
    added: int
    removed: int
    full_compare: bool
    #: The ids added to and removed from the index, and the collection's metadata revision as
    #: read before anything else (what in-memory metadata columns catch up with).
    added_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    removed_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    metadata_revision: int = 0


def catch_up(
    index: ADCIndex, *, sessions: sessionmaker[Session], collection_id: int, shard: storage.Shard | None = None
) -> CatchUp:
    """Bring ``index`` up to the collection's current rows (``shard``'s only, if given),
    fetching only what changed.

    The index must hold codes of the collection's current codec (a codec change needs a rebuild).
    """
    codec = index.codec
    with sessions() as session:
        state = storage.collection_fingerprint(session, collection_id=collection_id, shard=shard)
    ids = index.ids()
    top = int(ids.max()) if ids.size else 0
    added = removed = 0
    added_parts: list[np.ndarray] = []
    removed_ids = np.empty(0, dtype=np.int64)
    if state.max_id > top:
        with sessions() as session:
            new_ids, new_codes = storage.load_codes(
                session,
                collection_id=collection_id,
                num_subvectors=codec.num_subvectors,
                dtype=codec.code_dtype,
                after_id=top,
                up_to_id=state.max_id,
                shard=shard,
            )
        index.add(new_ids, new_codes, skip_present=True)
        added += len(new_ids)
        added_parts.append(np.asarray(new_ids, dtype=np.int64))
    held = index.ids()
    full = len(held) != state.count or _id_sum(held) != state.id_sum % _SUM_MODULUS
    if full:
        with sessions() as session:
            stored = storage.item_ids(session, collection_id=collection_id, up_to_id=state.max_id, shard=shard)
        removed_ids = np.setdiff1d(held, stored, assume_unique=True)
        removed = index.remove(removed_ids)
        missing = np.setdiff1d(stored, held, assume_unique=True)
        if missing.size:
            found = _add_rows(index, sessions, collection_id, missing)
            added += len(found)
            added_parts.append(found)
    version = IndexVersion(codec.content_hash, state.count, state.max_id, state.revision)
    logger.debug("collection %s: index caught up to %s (+%d -%d, full compare %s)", collection_id, version, added, removed, full)
    added_ids = np.concatenate(added_parts) if added_parts else np.empty(0, dtype=np.int64)
    return CatchUp(version, added, removed, full, added_ids, removed_ids, state.metadata_revision)


def _id_sum(ids: np.ndarray) -> int:
    return int(ids.astype(np.uint64).sum(dtype=np.uint64))  # wraps modulo 2**64, like the SQL sum taken modulo


def _add_rows(index: ADCIndex, sessions: sessionmaker[Session], collection_id: int, ids: np.ndarray) -> np.ndarray:
    with sessions() as session:
        rows = storage.get_items(session, collection_id=collection_id, ids=ids.tolist())
        found = np.asarray([row.id for row in rows], dtype=np.int64)
        codes = stored_codes(rows, index.codec) if rows else None
    if codes is None:
        return found
    index.add(found, codes, skip_present=True)
    return found


def stored_codes(rows: Sequence[storage.Item], codec: PQVAECodec) -> np.ndarray:
    """The codes of item rows read from the database, (len(rows), M) in the codec's dtype
    (each row holds its codes as little-endian bytes, see :func:`storage.pack_codes`)."""
    little = codec.code_dtype.newbyteorder("<")
    return np.stack([np.frombuffer(row.codes, dtype=little) for row in rows]).astype(codec.code_dtype)
