"""Item id -> storage position, for an id map that FAISS keeps in insertion order."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def as_id_array(ids: object, name: str = "ids") -> np.ndarray:
    """``ids`` as a 1-D int64 array (a scalar becomes one id); ValueError for non-integers."""
    array = np.asarray(ids)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {array.dtype}")
    if array.dtype == np.uint64 and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64")
    return np.ascontiguousarray(array, dtype=np.int64)


def find_sorted(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(present mask, index into ``sorted_ids``) of each of ``ids``: binary searches (the
    index of an absent id is meaningless)."""
    if len(sorted_ids) == 0 or len(ids) == 0:
        return np.zeros(len(ids), dtype=bool), np.zeros(len(ids), dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return sorted_ids[at] == ids, at


def unique_sorted(ids: np.ndarray) -> np.ndarray:
    """Sorted distinct ids (a sort, cheaper than np.unique's hashing for large int64 arrays)."""
    if len(ids) < 2:
        return np.sort(ids)
    if bool(np.all(ids[1:] > ids[:-1])):
        return ids  # already ascending and distinct (e.g. a filter's matching ids): no sort, no copy
    ordered = np.sort(ids)
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


class IdLookup:
    """Item id -> storage position in O(log n), in one of two forms.

    * **In order** (the usual case: database ids arrive increasing): the ids in storage order
      are already sorted, so the lookup binary-searches the id map itself, read through
      ``source`` (a zero-copy view), and a position is the index found: no bytes per item.
    * **Sorted copy**: sorted ids with their storage positions alongside, 16 bytes per item.
      Used as soon as an id arrives out of order (or without a ``source``).

    FAISS's own reverse map (``IndexIDMap2.rev_map``, a C++ hash map) is not readable from
    Python and costs more memory. Updates on add and remove are O(n) vectorised steps (both
    keep the storage order of the other items, so the in-order form survives removals).
    """

    def __init__(self, ids_in_storage_order: np.ndarray, source: Callable[[], np.ndarray] | None = None) -> None:
        self._source: Callable[[], np.ndarray] | None = None
        self._sorted = np.empty(0, dtype=np.int64)
        self._positions = np.empty(0, dtype=np.int64)
        if source is not None and _increasing(ids_in_storage_order):
            self._source = source
        else:
            self._copy(ids_in_storage_order)

    def _copy(self, ids_in_storage_order: np.ndarray) -> None:
        order = np.argsort(ids_in_storage_order, kind="stable")
        self._sorted = np.ascontiguousarray(ids_in_storage_order[order], dtype=np.int64)
        self._positions = order.astype(np.int64)
        self._source = None

    @property
    def in_order(self) -> bool:
        """Whether the lookup reads the id map directly (no per-item memory)."""
        return self._source is not None

    @property
    def sorted_ids(self) -> np.ndarray:
        return self._source() if self._source is not None else self._sorted

    @property
    def nbytes(self) -> int:
        return 0 if self._source is not None else int(self._sorted.nbytes + self._positions.nbytes)

    def has_duplicates(self) -> bool:
        ids = self.sorted_ids
        return bool(np.any(ids[1:] == ids[:-1]))

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(present mask, storage positions) for ``ids``; positions of absent ids are -1."""
        found, at = find_sorted(self.sorted_ids, ids)
        if not found.any():
            return found, np.full(len(ids), -1, dtype=np.int64)
        return found, np.where(found, at if self._source is not None else self._positions[at], -1)

    def appended(self, ids: np.ndarray, start: int) -> None:
        """Record ``ids`` (new, unique) stored at positions ``start, start+1, ...``.

        In the in-order form the id map already holds them; it stays in order if they extend it.
        """
        if self._source is not None:
            current = self._source()
            if not _increasing(current[max(start - 1, 0) :]):
                self._copy(current)
            return
        order = np.argsort(ids, kind="stable")
        new_ids = ids[order]
        at = np.searchsorted(self._sorted, new_ids)
        self._sorted = np.insert(self._sorted, at, new_ids)
        self._positions = np.insert(self._positions, at, start + order.astype(np.int64))

    def removed(self, ids: np.ndarray) -> None:
        """Forget ``ids`` (all present, unique); later items move down to close the gaps."""
        if self._source is not None:
            return  # the id map was compacted in order: still sorted, positions still indexes
        at = np.searchsorted(self._sorted, ids)
        gone = np.sort(self._positions[at])
        keep = np.ones(len(self._sorted), dtype=bool)
        keep[at] = False
        self._sorted = self._sorted[keep]
        positions = self._positions[keep]
        self._positions = positions - np.searchsorted(gone, positions)


def _increasing(ids: np.ndarray) -> bool:
    return bool(np.all(ids[1:] > ids[:-1]))
