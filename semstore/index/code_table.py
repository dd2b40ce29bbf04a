"""Item ids in ascending order with their packed codes: id -> code in O(log n), no hash map."""

from __future__ import annotations

import numpy as np

from semstore.index.lookup import find_sorted


class SortedCodeTable:
    """Ascending item ids, each with its packed code row (``row_bytes`` bytes).

    What an IVF index needs beside its lists: which ids it holds, and any item's code
    (re-ranking, id-filtered scoring, ``codes_for``) by vectorised binary search, for
    ``8 + row_bytes`` bytes per item. FAISS's hash-table direct map costs about 40 bytes per
    item more and is read one id per Python call.

    The buffers grow by a quarter when full, so adding ids above every present one (the
    usual case: database ids increase) copies only the new rows, apart from a full copy
    after every 25 % of growth; ids out of order are inserted in O(n). Not thread-safe: the
    owning index guards it with its read/write lock, and views returned here are valid only
    until the next change.
    """

    def __init__(self, row_bytes: int, ids: np.ndarray | None = None, rows: np.ndarray | None = None) -> None:
        self.row_bytes = int(row_bytes)
        self._ids = np.empty(0, dtype=np.int64)
        self._rows = np.empty((0, self.row_bytes), dtype=np.uint8)
        self._size = 0
        if ids is not None and len(ids):
            assert rows is not None
            order = np.argsort(ids, kind="stable")
            self._ids = np.ascontiguousarray(ids[order], dtype=np.int64)
            self._rows = np.ascontiguousarray(rows[order], dtype=np.uint8).reshape(len(order), self.row_bytes)
            self._size = len(order)

    def __len__(self) -> int:
        return self._size

    @property
    def ids(self) -> np.ndarray:
        """The ids, ascending (a view)."""
        return self._ids[: self._size]

    @property
    def nbytes(self) -> int:
        """Bytes of the id and row buffers, spare capacity included."""
        return int(self._ids.nbytes + self._rows.nbytes)

    def has_duplicates(self) -> bool:
        ids = self.ids
        return bool(np.any(ids[1:] == ids[:-1]))

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(present mask, row positions) of ``ids``; positions of absent ids are meaningless."""
        return find_sorted(self.ids, ids)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return self.find(ids)[0]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Packed code rows (n, row_bytes) of ``ids`` (all present), in the given order."""
        present, at = self.find(ids)
        if not present.all():
            raise KeyError(f"ids not in the table: {ids[~present][:10].tolist()}")
        return self._rows[at]

    def rows_at(self, positions: np.ndarray) -> np.ndarray:
        """Packed code rows at table ``positions`` (from :meth:`find`)."""
        return self._rows[positions]

    def add(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Add new, distinct ``ids`` (none present) with their packed ``rows``."""
        if len(ids) == 0:
            return
        order = np.argsort(ids, kind="stable")
        new_ids, new_rows = ids[order], rows[order]
        size = self._size
        if size and new_ids[0] < self._ids[size - 1]:
            at = np.searchsorted(self._ids[:size], new_ids)
            self._ids = np.insert(self._ids[:size], at, new_ids)
            self._rows = np.insert(self._rows[:size], at, new_rows, axis=0)
            self._size = len(self._ids)
            return
        self._reserve(size + len(new_ids))
        self._ids[size : size + len(new_ids)] = new_ids
        self._rows[size : size + len(new_ids)] = new_rows
        self._size = size + len(new_ids)

    def remove(self, ids: np.ndarray) -> None:
        """Drop ``ids`` (present, distinct)."""
        if len(ids) == 0:
            return
        keep = np.ones(self._size, dtype=bool)
        keep[np.searchsorted(self._ids[: self._size], ids)] = False
        self._ids = self._ids[: self._size][keep]
        self._rows = self._rows[: self._size][keep]
        self._size = len(self._ids)

    def _reserve(self, needed: int) -> None:
        if needed <= len(self._ids):
            return
        capacity = max(needed, len(self._ids) + len(self._ids) // 4)
        ids = np.empty(capacity, dtype=np.int64)
        rows = np.empty((capacity, self.row_bytes), dtype=np.uint8)
        ids[: self._size] = self._ids[: self._size]
        rows[: self._size] = self._rows[: self._size]
        self._ids, self._rows = ids, rows
