"""Recent metadata filters' matching ids, each valid for exactly one collection revision.

A search with a selective filter scores only the matching items; looking them up is most of
its cost (10^4 ids at 10^6 items: about a millisecond of SQL and transfer). Searches often
repeat a filter (a page's camera or date control, an API client's tenant key), so the ids
are kept, tagged with the revision they were read at (one statement: ids and revision
together), and used again only while the collection's revision is unchanged: the revision
that comes back with the hit rows decides, so any write in between, by any process, makes
the search look the ids up again. Results stay exact; a busy collection just gets no hits.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from semstore.conditions import value_kind

#: Filters remembered per collection ...
MAX_ENTRIES = 32
#: ... and filters whose match count is remembered (a few dozen bytes each).
MAX_COUNTS = 1024
#: ... each of at most this many matching ids (8 bytes each: 512 KiB at most per entry).
MAX_IDS = 65_536

FilterKey = tuple[tuple[str, Any], ...]


def filter_key(where: Mapping[str, Any]) -> FilterKey:
    """A hashable key with the filter's own equality: ``True`` differs from ``1``, ``1`` equals
    ``1.0``; operators (``{"$gt": 1}``) and ``$in`` lists are part of it."""

    def frozen(value: Any) -> Any:
        if isinstance(value, Mapping):
            return ("operators", tuple(sorted((op, frozen(operand)) for op, operand in value.items())))
        if isinstance(value, list | tuple):
            return ("list", tuple(frozen(item) for item in value))
        return (value_kind(value), value)

    return tuple(sorted((key, frozen(value)) for key, value in where.items()))


class FilterCache:
    """An LRU of ``filter -> (revision, sorted matching ids)`` for one collection (thread-safe),
    and of each filter's last known match count.

    The ids are exact for one revision only; the count outlives writes, as an estimate of the
    filter's selectivity: a filter known to match few items goes straight to the lookup of its
    ids, without first probing the index for candidates (which would find too few of them).
    A wrong estimate costs only speed, never exactness.
    """

    def __init__(self, max_entries: int = MAX_ENTRIES, max_ids: int = MAX_IDS, max_counts: int = MAX_COUNTS) -> None:
        self.max_entries, self.max_ids, self.max_counts = max_entries, max_ids, max_counts
        self._entries: OrderedDict[FilterKey, tuple[int, np.ndarray]] = OrderedDict()
        self._counts: OrderedDict[FilterKey, int] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: FilterKey) -> tuple[int, np.ndarray] | None:
        """``(revision, ids)`` remembered for this filter, or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def count(self, key: FilterKey) -> int | None:
        """The filter's match count when its ids were last looked up (any revision), or None."""
        with self._lock:
            return self._counts.get(key)

    def put(self, key: FilterKey, revision: int, ids: np.ndarray) -> None:
        """Remember the ids read at ``revision`` (too many ids are not kept) and their count."""
        with self._lock:
            self._counts[key] = len(ids)
            self._counts.move_to_end(key)
            while len(self._counts) > self.max_counts:
                self._counts.popitem(last=False)
        if len(ids) > self.max_ids:
            return
        ids = ids.copy()
        ids.setflags(write=False)
        with self._lock:
            self._entries[key] = (revision, ids)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def discard(self, key: FilterKey, revision: int) -> None:
        """Forget the entry of ``key`` if it is still the one read at ``revision``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == revision:
                del self._entries[key]

    def forget(self, key: FilterKey, *, count: bool = False) -> None:
        """Forget the ids of ``key`` whatever their revision (as a write does), and with
        ``count`` its match count too (as if the filter had never been used)."""
        with self._lock:
            self._entries.pop(key, None)
            if count:
                self._counts.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._counts.clear()
