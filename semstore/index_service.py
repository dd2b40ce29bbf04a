"""The index service of one collection: its in-memory index and the database revision it reflects.

Every write bumps the collection's ``revision`` in the same transaction as its rows
(:mod:`semstore.storage`), so an index is fresh exactly when the revision it reflects equals
the stored one: :meth:`IndexService.fresh` reads that one counter (a primary-key lookup,
whatever the collection's size) before every search. Three kinds of revisions are told apart:

* **own, applied**: written by this process inside :meth:`IndexService.writing` and applied
  to the index in place (:meth:`apply_added`, :meth:`apply_removed`, :meth:`applied`);
* **own, in flight**: committed by such a writer that has not applied it yet (the few
  moments between its commit and its index update). A search does not wait for it;
* **foreign**: anything else (another process, another :class:`~semstore.Database`, a
  write outside :meth:`writing`). Only then does a search catch up
  (:func:`semstore.replica.catch_up`: fetch what changed, compare ids only when needed).

Searches never wait for an ingest, an encode or a codec training: they take only the
index's own read lock, and the short lock guarding this bookkeeping. Catch-ups and in-place
applies are serialised among themselves and are idempotent, so a catch-up that already
picked up an own write's rows makes the later apply a no-op.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from semstore import storage
from semstore.codec import PQVAECodec
from semstore.index import ADCIndex, IndexLoadError
from semstore.index.ivf_index import DEFAULT_NPROBE, IVFIndex
from semstore.index.metadata_columns import DEFAULT_MAX_DISTINCT, MetadataColumns, metadata_postings
from semstore.replica import CatchUp, catch_up

if TYPE_CHECKING:
    from semstore.config import Settings

logger = logging.getLogger(__name__)

#: An index is saved after a write once this many items changed since its last save ...
SAVE_MIN_CHANGES = 10_000
#: ... or this fraction of its items (whichever is fewer) ...
SAVE_MIN_FRACTION = 0.01
#: ... or this long after the last save.
SAVE_MAX_AGE_SECONDS = 300.0

CodecSource = Callable[[int | None], "tuple[PQVAECodec, int] | None"]


SearchIndex = ADCIndex | IVFIndex


@dataclass(frozen=True)
class IndexPolicy:
    """Which index a collection gets: ``kind`` auto / exhaustive / ivf, and the IVF parameters."""

    kind: str = "auto"
    ivf_min_items: int = 1_000_000
    nlist: int | None = None
    nprobe: int = DEFAULT_NPROBE
    #: Hold the filterable metadata in memory beside the index (None: never), up to this many
    #: distinct values per key (see :mod:`semstore.index.metadata_columns`).
    metadata_max_distinct: int | None = DEFAULT_MAX_DISTINCT

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexPolicy:
        return cls(
            settings.index_kind, settings.ivf_min_items, settings.ivf_nlist, settings.ivf_nprobe,
            settings.metadata_max_distinct if settings.metadata_in_memory else None,
        )  # fmt: skip

    def wants_ivf(self, codec: PQVAECodec, items: int, current: SearchIndex | None = None) -> bool:
        """Whether ``items`` items under ``codec`` call for IVF (with hysteresis around the threshold)."""
        if codec.codebook_size <= 16 or self.kind == "exhaustive":
            return False  # 4-bit codes: the exhaustive fast-scan is the faster index
        if self.kind == "ivf":
            return items > 0
        threshold = self.ivf_min_items // 2 if isinstance(current, IVFIndex) else self.ivf_min_items
        return items >= max(1, threshold)

    def wants_other_kind(self, index: SearchIndex) -> bool:
        """Whether ``index`` (its codec, its size) calls for the other kind of index."""
        return self.wants_ivf(index.codec, len(index), index) != isinstance(index, IVFIndex)


@dataclass(frozen=True)
class IndexState:
    """What :meth:`IndexService.describe` reports (e.g. for ``stats`` and metrics)."""

    kind: str
    items: int
    revision: int | None
    memory_bytes: int
    bytes_per_item: float
    nlist: int | None = None
    nprobe: int | None = None
    metadata_keys: tuple[str, ...] = ()
    metadata_bytes: int = 0


class IndexService:
    """The search index of one collection, kept in step with the database.

    ``codec_source(codec_id)`` returns the collection's ``(codec, codec id)`` for the codec id
    just read from the database (None before the first ingest trained one); ``directory()`` where its index is saved (None: never
    saved, e.g. a name that is no safe folder name). With ``shard`` the index holds that
    shard's items only (built, caught up and applied with the shard's condition): what one
    shard replica of a sharded deployment serves.
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        collection_id: int,
        codec_source: CodecSource,
        directory: Callable[[], Path | None],
        policy: IndexPolicy | None = None,
        shard: storage.Shard | None = None,
    ) -> None:
        self._sessions = sessions
        self.shard = shard
        self._collection_id = collection_id
        self._codec_source = codec_source
        self._directory = directory
        self.policy = policy or IndexPolicy()
        self._index: SearchIndex | None = None
        self._columns: MetadataColumns | None = None  # the items' metadata, beside the index
        self._columns_metadata_revision = -1  # the collection's metadata revision they reflect
        self._codec_id: int | None = None
        self._revision = -1  # the revision the index reflects fully (-1: none yet)
        self._applied: set[int] = set()  # own revisions above it, already applied
        self._in_flight: set[int] = set()  # own revisions committed, not applied yet
        self._unsaved = 0  # items added or removed since the last save (or load)
        self._saved_revision = -1  # the revision of the index file, as far as this process knows
        self._saved_at = time.monotonic()
        self._state = threading.Lock()  # guards the fields above: held for microseconds
        self._apply = threading.RLock()  # serialises builds, catch-ups and in-place applies
        self._writer = threading.local()

    # -- reading -------------------------------------------------------------------------
    @property
    def loaded(self) -> SearchIndex | None:
        """The index if one is in memory (never builds, loads or checks freshness)."""
        return self._index

    @property
    def columns(self) -> MetadataColumns | None:
        """The filterable metadata of the index's items, in step with it (None: not held,
        e.g. while the index loads, or when the policy keeps metadata in the database only)."""
        return self._columns

    @property
    def revision(self) -> int:
        """The database revision the in-memory index fully reflects (-1 before the first load)."""
        with self._state:
            return self._revision

    def fresh(self, stored: storage.CollectionRevision | None = None) -> SearchIndex | None:
        """The index, caught up with every write committed before this call; None without a codec.

        One read of the collection's revision (or ``stored``, read by the caller after the
        call began, e.g. on the connection its search uses for everything); the index is
        loaded, built or caught up only when a write of another process (or a codec change)
        made that necessary.
        """
        if stored is None:
            with self._sessions() as session:
                stored = storage.collection_revision(session, collection_id=self._collection_id)
        index = self.fresh_as_of(stored)
        if index is not None or stored.codec_id is None:
            return index
        return self._refresh(stored)

    def fresh_as_of(self, stored: storage.CollectionRevision) -> SearchIndex | None:
        """The index in memory if it reflects ``stored`` (its writes or this process's own in
        flight); None when it would need loading or catching up. Reads nothing."""
        with self._state:
            index = self._index
            if index is not None and stored.codec_id == self._codec_id and self._covers(stored.revision):
                return index
        return None

    def _covers(self, revision: int) -> bool:
        """Whether every revision up to ``revision`` is reflected or an own write in flight (under ``_state``)."""
        while self._revision + 1 in self._applied:
            self._revision += 1
            self._applied.discard(self._revision)
        if revision <= self._revision:
            return True
        pending = self._applied | self._in_flight
        return all(r in pending for r in range(self._revision + 1, revision + 1))

    def _refresh(self, stored: storage.CollectionRevision) -> SearchIndex | None:
        with self._apply:
            with self._state:
                if self._index is not None and stored.codec_id == self._codec_id and self._covers(stored.revision):
                    return self._index  # another thread caught up meanwhile
                index, same_codec = self._index, stored.codec_id == self._codec_id
            if index is not None and same_codec:
                done = catch_up(index, sessions=self._sessions, collection_id=self._collection_id, shard=self.shard)
                self._catch_up_columns(done)
                self._settle(done.version.revision)
                with self._state:
                    self._unsaved += done.added + done.removed
                return index
            return self._load(stored)

    def _load(self, stored: storage.CollectionRevision) -> SearchIndex | None:
        """Load the saved index (catching it up) or build one from the database (under ``_apply``)."""
        current = self._codec_source(stored.codec_id)
        if current is None:
            return None
        codec, codec_id = current
        index = self._read_saved(codec)
        if index is not None:
            with self._state:
                self._index, self._codec_id = index, codec_id
                self._revision = index.saved_version.revision if index.saved_version else -1
                self._saved_revision = self._revision
                self._applied.clear()
            if index.saved_version is None or index.saved_version.revision != stored.revision:
                done = catch_up(index, sessions=self._sessions, collection_id=self._collection_id, shard=self.shard)
                self._settle(done.version.revision)
                self.save(force=True)  # so the next start loads this state
            self._reload_columns()
            return index
        revision, index = self._build(codec, None)
        with self._state:
            self._index, self._codec_id, self._revision = index, codec_id, revision
            self._applied.clear()
        self._reload_columns()
        self.save(force=True)
        return index

    # -- the metadata columns (under ``_apply``) -------------------------------------------
    def reload_columns(self) -> MetadataColumns | None:
        """Read the metadata columns again from the database (e.g. to time it); returns them."""
        with self._apply:
            if self._index is not None:
                self._reload_columns()
            return self._columns

    def _reload_columns(self) -> None:
        """Read the collection's filterable metadata into new columns (read after the index's
        state: they may hold newer rows than the index, never older ones)."""
        limit = self.policy.metadata_max_distinct
        if limit is None:
            return
        started = time.perf_counter()
        with self._sessions() as session:
            metadata_revision = storage.metadata_revision(session, collection_id=self._collection_id)
            values = list(storage.collection_values(session, collection_id=self._collection_id, shard=self.shard))
        columns = MetadataColumns(max_distinct=limit)
        # Every item of the index has a row (one without metadata matches "$ne" and "$exists": false).
        index = self._index
        held = [index.ids()] if index is not None else []
        ids = np.unique(np.concatenate([*held, *(ids for *_, ids in values)])) if held or values else np.empty(0, np.int64)
        columns.set_terms(ids, ((key, (kind, value), ids) for key, kind, value, ids in values))
        self._columns, self._columns_metadata_revision = columns, metadata_revision
        logger.debug("collection %s: metadata columns of %d items read in %.3f s (%s)",
                     self._collection_id, len(columns), time.perf_counter() - started, columns)  # fmt: skip

    def _catch_up_columns(self, done: CatchUp) -> None:
        """Apply what a catch-up of the index added and removed to the columns (before the
        revisions it reached count as reflected); reload them when metadata changed."""
        columns = self._columns
        if columns is None:
            return
        if done.metadata_revision != self._columns_metadata_revision:
            self._reload_columns()  # another process changed some item's metadata
            return
        if done.added_ids.size:
            with self._sessions() as session:
                found = storage.item_postings(session, collection_id=self._collection_id, ids=done.added_ids.tolist())
            columns.set_items(done.added_ids, [(i, key, (kind, value)) for i, key, kind, value in found])
        if done.removed_ids.size:
            columns.remove(done.removed_ids)

    def _build(self, codec: PQVAECodec, current: SearchIndex | None) -> tuple[int, SearchIndex]:
        """A new index of the kind the policy wants, from every stored row; ``(revision, index)``."""
        with self._sessions() as session:
            # The revision first: rows committed after it are picked up by the next catch-up.
            revision = storage.collection_revision(session, collection_id=self._collection_id).revision
            ids, codes = storage.load_codes(
                session, collection_id=self._collection_id, num_subvectors=codec.num_subvectors, dtype=codec.code_dtype,
                shard=self.shard,
            )
        if self.policy.wants_ivf(codec, len(ids), current):
            return revision, IVFIndex.build(codec, ids, codes, nlist=self.policy.nlist, nprobe=self.policy.nprobe)
        return revision, ADCIndex.build(codec, ids, codes)

    def _read_saved(self, codec: PQVAECodec) -> SearchIndex | None:
        directory = self._directory()
        if directory is None:
            return None
        saved: SearchIndex
        try:
            saved = ADCIndex.load(directory, codec)
        except IndexLoadError as exc:
            try:
                saved = IVFIndex.load(directory, codec, nprobe=self.policy.nprobe)
            except IndexLoadError:
                logger.info("collection %s: building the index (%s)", self._collection_id, exc)
                return None
        if self.policy.kind != "auto" and self.policy.wants_other_kind(saved):
            # A pinned kind wins over a saved index of the other kind (saved before the pin).
            logger.info("collection %s: the saved index is not of the pinned kind %s; building one", self._collection_id, self.policy.kind)
            return None
        return saved

    def migrate_if_needed(self) -> bool:
        """Rebuild the index as the other kind when the collection's size calls for it.

        Searches go on with the current index while the new one is built; own writes and
        catch-ups wait. Returns whether it switched.
        """
        index = self._index
        if index is None or not self.policy.wants_other_kind(index):
            return False
        with self._apply:
            current = self.codec_and_index()
            if current is None:
                return False
            codec_id, old = current
            if not self.policy.wants_other_kind(old):
                return False
            revision, new = self._build(old.codec, old)
            logger.info("collection %s: %d items, index switched to %s", self._collection_id, len(new), type(new).__name__)
            with self._state:
                self._index, self._revision, self._saved_revision = new, revision, -1
                self._applied = {r for r in self._applied if r > revision}
            done = catch_up(new, sessions=self._sessions, collection_id=self._collection_id, shard=self.shard)
            self._catch_up_columns(done)
            self._settle(done.version.revision)
            self.save(force=True)
            return True

    def codec_and_index(self) -> tuple[int, SearchIndex] | None:
        with self._state:
            if self._index is None or self._codec_id is None:
                return None
            return self._codec_id, self._index

    def _settle(self, revision: int) -> None:
        with self._state:
            if revision > self._revision:
                self._revision = revision
            self._applied = {r for r in self._applied if r > self._revision}

    # -- own writes ----------------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator[None]:
        """Mark this thread's commits in the block as own writes that it applies in place.

        A commit of the block that is not followed by an ``apply_*`` call before the block
        ends counts as foreign (the next search catches up), so forgetting one is safe.
        """
        outer = getattr(self._writer, "pending", None)
        self._writer.pending = [] if outer is None else outer
        try:
            yield
        finally:
            if outer is None:
                unapplied = self._writer.pending
                self._writer.pending = None
                with self._state:
                    self._in_flight.difference_update(unapplied)

    def rolled_back(self, revisions: list[int]) -> None:
        """Called with the revisions of a transaction that was rolled back after :meth:`committed`."""
        pending = getattr(self._writer, "pending", None)
        if pending is not None:
            pending[:] = [r for r in pending if r not in revisions]
        with self._state:
            self._in_flight.difference_update(revisions)

    def committed(self, revisions: list[int]) -> None:
        """Called with the revisions a transaction of this process is committing."""
        pending = getattr(self._writer, "pending", None)
        if pending is None:
            return  # not inside writing(): foreign, as far as the index is concerned
        pending.extend(revisions)
        with self._state:
            self._in_flight.update(revisions)

    def apply_added(
        self, ids: np.ndarray, codes: np.ndarray, metadata: Sequence[Mapping[str, Any] | None] | None = None
    ) -> None:
        """Add the rows this thread just committed to the index (if one is loaded; a shard's
        index takes only its own), with each row's metadata (None: none)."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = list(metadata) if metadata is not None else [None] * len(ids)
        if self.shard is not None:
            mine = self.shard.holds(ids)
            ids, codes, rows = ids[mine], np.asarray(codes)[mine], [m for m, keep in zip(rows, mine) if keep]

        def change(index: SearchIndex) -> int:
            added = index.add(ids, codes, skip_present=True)
            self._set_own_metadata(ids, rows)
            return int(added or 0)

        self._apply_own(change)

    def apply_removed(self, ids: np.ndarray) -> None:
        """Remove the rows this thread just deleted from the index (if one is loaded)."""

        def change(index: SearchIndex) -> int:
            removed = index.remove(ids)
            if self._columns is not None:
                self._columns.remove(ids)
            return int(removed or 0)

        self._apply_own(change)

    def apply_metadata(self, item_id: int, metadata: Mapping[str, Any], metadata_revision: int) -> None:
        """The metadata of an item this thread just committed (``metadata_revision``: the
        collection's, as that transaction committed it)."""

        def change(_: SearchIndex) -> None:
            if self.shard is not None and not bool(self.shard.holds([item_id])[0]):
                return
            self._set_own_metadata(np.asarray([item_id], dtype=np.int64), [metadata])
            if metadata_revision == self._columns_metadata_revision + 1:
                self._columns_metadata_revision = metadata_revision
            # (otherwise another process changed metadata in between: the next catch-up reloads)

        self._apply_own(change)

    def _set_own_metadata(self, ids: np.ndarray, rows: Sequence[Mapping[str, Any] | None]) -> None:
        if self._columns is not None:
            postings = [p for item_id, row in zip(ids.tolist(), rows) for p in metadata_postings(item_id, row)]
            self._columns.set_items(ids, postings)

    def applied(self) -> None:
        """This thread's committed writes need no index change."""
        self._apply_own(lambda index: None)

    def _apply_own(self, change: Callable[[SearchIndex], object]) -> None:
        pending = getattr(self._writer, "pending", None) or []
        revisions, pending[:] = list(pending), []
        with self._apply:
            index = self._index
            try:
                changed = change(index) if index is not None else None
            except Exception:
                with self._state:
                    self._in_flight.difference_update(revisions)  # now foreign: the next search catches up
                raise
            with self._state:
                self._in_flight.difference_update(revisions)
                if index is not None:
                    self._applied.update(r for r in revisions if r > self._revision)
                    self._unsaved += int(changed or 0)

    def codec_changed(self) -> None:
        """The collection got a (new) codec: the next access builds an index for it."""
        with self._apply, self._state:
            self._index, self._codec_id, self._revision, self._saved_revision = None, None, -1, -1
            self._columns, self._columns_metadata_revision = None, -1
            self._applied.clear()
            self._in_flight.clear()

    # -- persistence ---------------------------------------------------------------------
    def save(self, *, force: bool = False) -> Path | None:
        """Save the index with the revision it fully reflects; returns the file, None if not saved.

        Without ``force`` only when it is worth it: at least :data:`SAVE_MIN_CHANGES` items (or
        :data:`SAVE_MIN_FRACTION` of them) changed, or :data:`SAVE_MAX_AGE_SECONDS` passed,
        since the last save. A saved index that is behind costs only a catch-up when loaded,
        so an upload of a few images does not rewrite a 10^6-item index.
        """
        directory = self._directory()
        with self._apply:
            with self._state:
                index = self._index
                self._covers(self._revision)  # fold applied revisions into the prefix
                revision, unsaved, age = self._revision, self._unsaved, time.monotonic() - self._saved_at
            if index is None or directory is None or revision < 0:
                return None
            worth = unsaved >= min(SAVE_MIN_CHANGES, max(1, int(SAVE_MIN_FRACTION * len(index)))) or age >= SAVE_MAX_AGE_SECONDS
            if revision == self._saved_revision or not (force or worth):
                return None
            path = index.save(directory, index.current_version(revision))
            with self._state:
                self._unsaved, self._saved_at = max(0, self._unsaved - unsaved), time.monotonic()
                self._saved_revision = revision
            return path

    def describe(self) -> IndexState | None:
        """Kind, size and memory of the loaded index (None when none is loaded)."""
        index = self._index
        if index is None:
            return None
        ivf = isinstance(index, IVFIndex)
        return IndexState(
            kind="ivf" if ivf else f"adc-{index.layout}",
            items=len(index),
            revision=self.revision,
            memory_bytes=index.memory_bytes,
            bytes_per_item=index.bytes_per_item,
            nlist=index.nlist if ivf else None,
            nprobe=index.nprobe if ivf else None,
            metadata_keys=tuple(columns.keys) if (columns := self._columns) is not None else (),
            metadata_bytes=columns.memory_bytes if columns is not None else 0,
        )

    def __repr__(self) -> str:
        return f"IndexService(collection={self._collection_id}, revision={self._revision}, index={self._index!r})"


def revisions_of(session: Session) -> dict[int, list[int]]:
    """The revisions a session's transaction wrote, by collection id."""
    found: dict[int, list[int]] = {}
    for collection_id, revision in storage.written_revisions(session):
        found.setdefault(collection_id, []).append(revision)
    return found

