"""Filtered search: the best items of an index among those matching a metadata filter.

:func:`filtered_search` decides between post-filtering (check the index's best candidates
against the filter) and pre-filtering (find every matching id, score only those) from the
filter's known or estimated match count, and stays exact with respect to the filter either
way. Which items match comes from a :class:`FilterSource`: the metadata columns held beside
the index (:class:`ColumnsFilter`, no SQL) or the database's postings (:class:`DatabaseFilter`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from semstore import storage
from semstore.filter_cache import FilterCache, filter_key
from semstore.index.adc import GATHER_SUBSET_MAX
from semstore.index.metadata_columns import MetadataColumns

if TYPE_CHECKING:
    from semstore.index_service import SearchIndex

#: A filtered search first checks the best max(FACTOR * depth, MIN) ADC candidates against
#: the filter, and widens that once, to at most MAX candidates, for a selective filter.
POST_FILTER_FACTOR = 4
POST_FILTER_MIN = 256
POST_FILTER_MAX = 16_384


def filtered_search(
    index: SearchIndex, vector: np.ndarray, k: int, rerank: int | None, source: FilterSource, *, selective: bool = False
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """The search of ``index`` restricted to the items ``source`` says match, exact w.r.t. the
    filter: ``(scores, ids, revision)``, where ``revision`` is that of the remembered matching
    ids it used, for the caller to check (None: nothing to check).

    Matching ids remembered for the current state are scored directly. Otherwise, unless the
    filter is known to match too few items for it, post-filter first: the best ADC candidates
    of the whole index are checked against the filter. When at least ``depth`` of them match,
    the best ``depth`` matching items are among them, so that is the exact answer. Else the
    filter is selective: with a few matches seen, once more over proportionally more
    candidates; with none, all matching ids are looked up (and remembered) and only they are
    scored. ``selective``: the filter is known to match few items (e.g. its remembered ids were
    just found out of date): look them up at once.
    """
    if source.none_match():
        return (*search_allowed(index, vector, k, rerank, np.empty(0, dtype=np.int64)), None)
    remembered = source.remembered()
    if remembered is not None:
        allowed, revision = remembered
        return (*search_allowed(index, vector, k, rerank, allowed), revision)
    depth = k if rerank is None else max(int(rerank), k)
    total = len(index)
    probe = min(total, max(POST_FILTER_FACTOR * depth, POST_FILTER_MIN))
    # A known (or estimated) match count that says the probe would find fewer than depth
    # matches, and the lookup is cheap: skip the probe.
    known = source.estimate()
    if selective or (known is not None and known <= GATHER_SUBSET_MAX and known * probe < depth * total):
        probe = total
    while probe < total:  # (a probe of every item would only cost more than the lookup)
        _, candidates = index.search(vector, probe)
        candidates = candidates[0][candidates[0] >= 0]
        matching = source.among(candidates)
        if len(matching) >= depth:
            return (*index.search(vector, k, rerank=rerank, allowed_ids=matching), None)
        if len(matching) * total <= GATHER_SUBSET_MAX * probe:
            break  # about that many items match in all: cheaper to look them up and score them all
        wider = int(2 * depth * probe / len(matching))
        if wider > POST_FILTER_MAX or probe >= POST_FILTER_MAX:
            break
        probe = min(total, wider)
    return (*search_allowed(index, vector, k, rerank, source.everything()), None)


def search_allowed(
    index: SearchIndex, vector: np.ndarray, k: int, rerank: int | None, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of the ``allowed`` ids (none allowed: no hits)."""
    if allowed.size == 0:
        return np.full((1, k), -np.inf, dtype=np.float32), np.full((1, k), -1, dtype=np.int64)
    return index.search(vector, k, rerank=rerank, allowed_ids=allowed)


class FilterSource(Protocol):
    """Where a filtered search learns which items match (see :func:`filtered_search`)."""

    def remembered(self) -> tuple[np.ndarray, int | None] | None:
        """Matching ids remembered for the current state, and the revision to check them
        against (None: nothing to check), or None."""

    def estimate(self) -> int | None:
        """About how many items match (None: unknown)."""

    def none_match(self) -> bool:
        """Whether no item can match (known without looking any up)."""

    def among(self, candidates: np.ndarray) -> np.ndarray:
        """The candidates that match."""

    def everything(self) -> np.ndarray:
        """Every matching id, ascending (remembered for next time)."""


class ColumnsFilter:
    """A filter answered by the metadata columns held beside the index (in step with it)."""

    def __init__(self, columns: MetadataColumns, where: dict[str, Any], cache: FilterCache) -> None:
        self._columns, self._where, self._cache, self._key = columns, where, cache, filter_key(where)
        self._estimate: int | None = None  # (computed once: none_match and estimate both ask)

    def remembered(self) -> tuple[np.ndarray, int | None] | None:
        entry = self._cache.get(self._key)
        if entry is None or entry[0] != self._columns.version:
            return None
        return entry[1], None

    def estimate(self) -> int | None:
        if self._estimate is None:
            self._estimate = self._columns.estimate(self._where)
        return self._estimate

    def none_match(self) -> bool:
        return self.estimate() == 0  # (an upper bound: 0 is certain)

    def among(self, candidates: np.ndarray) -> np.ndarray:
        return self._columns.match(self._where, candidates)

    def everything(self) -> np.ndarray:
        version = self._columns.version  # (read first: a change meanwhile makes the entry stale, never wrong)
        allowed = self._columns.matching(self._where)
        self._cache.put(self._key, version, allowed)
        return allowed


class DatabaseFilter:
    """A filter answered by the database's postings; matching ids remembered per revision."""

    def __init__(self, reader: storage.Reader, collection_id: int, where: dict[str, Any], cache: FilterCache) -> None:
        self._reader, self._collection_id, self._where = reader, collection_id, where
        self._cache, self._key = cache, filter_key(where)

    def remembered(self) -> tuple[np.ndarray, int | None] | None:
        entry = self._cache.get(self._key)
        return None if entry is None else (entry[1], entry[0])

    def estimate(self) -> int | None:
        return self._cache.count(self._key)  # (from an earlier lookup: it outlives writes)

    def none_match(self) -> bool:
        return False  # (a remembered count of 0 may be out of date)

    def among(self, candidates: np.ndarray) -> np.ndarray:
        return storage.filter_item_ids(
            self._reader, collection_id=self._collection_id, where=self._where, among=candidates.tolist()
        )

    def everything(self) -> np.ndarray:
        allowed, stored = storage.filter_item_ids_with_revision(self._reader, collection_id=self._collection_id, where=self._where)
        self._cache.put(self._key, stored.revision, allowed)
        return allowed
