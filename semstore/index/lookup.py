"""Item id -> storage position, for an id map that FAISS keeps in insertion order."""

from __future__ import annotations

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


def unique_sorted(ids: np.ndarray) -> np.ndarray:
    """Sorted distinct ids (a sort, cheaper than np.unique's hashing for large int64 arrays)."""
    ordered = np.sort(ids)
    if len(ordered) < 2:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


class IdLookup:
    """Sorted ids with their storage positions alongside: 16 bytes per item, O(log n) lookups.

    FAISS's own reverse map (``IndexIDMap2.rev_map``, a C++ hash map) is not readable from
    Python and costs more memory, so the wrapper keeps this instead and updates it in O(n)
    vectorised steps on add and remove (both keep the storage order of the other items).
    """

    def __init__(self, ids_in_storage_order: np.ndarray) -> None:
        order = np.argsort(ids_in_storage_order, kind="stable")
        self.sorted_ids = np.ascontiguousarray(ids_in_storage_order[order], dtype=np.int64)
        self.positions = order.astype(np.int64)

    @property
    def nbytes(self) -> int:
        return int(self.sorted_ids.nbytes + self.positions.nbytes)

    def has_duplicates(self) -> bool:
        return bool(np.any(self.sorted_ids[1:] == self.sorted_ids[:-1]))

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(present mask, storage positions) for ``ids``; positions of absent ids are -1."""
        if len(self.sorted_ids) == 0 or len(ids) == 0:
            return np.zeros(len(ids), dtype=bool), np.full(len(ids), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.sorted_ids, ids), len(self.sorted_ids) - 1)
        found = self.sorted_ids[at] == ids
        return found, np.where(found, self.positions[at], -1)

    def appended(self, ids: np.ndarray, start: int) -> None:
        """Record ``ids`` (new, unique) stored at positions ``start, start+1, ...``."""
        order = np.argsort(ids, kind="stable")
        new_ids = ids[order]
        at = np.searchsorted(self.sorted_ids, new_ids)
        self.sorted_ids = np.insert(self.sorted_ids, at, new_ids)
        self.positions = np.insert(self.positions, at, start + order.astype(np.int64))

    def removed(self, ids: np.ndarray) -> None:
        """Forget ``ids`` (all present, unique); later items move down to close the gaps."""
        at = np.searchsorted(self.sorted_ids, ids)
        gone = np.sort(self.positions[at])
        keep = np.ones(len(self.sorted_ids), dtype=bool)
        keep[at] = False
        self.sorted_ids = self.sorted_ids[keep]
        positions = self.positions[keep]
        self.positions = positions - np.searchsorted(gone, positions)
