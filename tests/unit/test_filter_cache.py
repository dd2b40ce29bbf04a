"""FilterCache: remembered filter results, keyed with the filter's own equality, bounded."""

from __future__ import annotations

import numpy as np

from semstore.filter_cache import FilterCache, filter_key


def test_keys_follow_filter_equality() -> None:
    assert filter_key({"a": 1}) == filter_key({"a": 1.0})  # 1 == 1.0 in a filter
    assert filter_key({"a": True}) != filter_key({"a": 1})  # a boolean never equals a number
    assert filter_key({"a": "1"}) != filter_key({"a": 1})
    assert filter_key({"a": 1, "b": "x"}) == filter_key({"b": "x", "a": 1})  # order does not matter


def test_lru_bound_size_bound_and_revision_checked_discard() -> None:
    cache = FilterCache(max_entries=2, max_ids=3)
    ids = np.array([1, 2, 3], dtype=np.int64)
    cache.put(filter_key({"a": 1}), 7, ids)
    ids[0] = 99  # the cache keeps its own copy, read-only
    revision, kept = cache.get(filter_key({"a": 1}))  # type: ignore[misc]
    assert revision == 7 and kept.tolist() == [1, 2, 3] and not kept.flags.writeable
    cache.put(filter_key({"b": 1}), 7, ids)
    cache.get(filter_key({"a": 1}))  # a is now the most recent
    cache.put(filter_key({"c": 1}), 8, ids)  # evicts b, the least recent
    assert cache.get(filter_key({"b": 1})) is None and cache.get(filter_key({"a": 1})) is not None
    cache.put(filter_key({"d": 1}), 8, np.arange(4))  # too many ids: not kept
    assert cache.get(filter_key({"d": 1})) is None
    cache.discard(filter_key({"a": 1}), 6)  # another revision's entry: kept
    assert cache.get(filter_key({"a": 1})) is not None
    cache.discard(filter_key({"a": 1}), 7)
    assert cache.get(filter_key({"a": 1})) is None
    cache.forget(filter_key({"c": 1}))
    assert cache.get(filter_key({"c": 1})) is None


def test_match_counts_outlive_forgotten_ids() -> None:
    cache = FilterCache(max_entries=2, max_ids=3, max_counts=2)
    cache.put(filter_key({"a": 1}), 7, np.array([1, 2], dtype=np.int64))
    cache.put(filter_key({"big": 1}), 7, np.arange(10))  # too many ids to keep, but counted
    assert cache.get(filter_key({"big": 1})) is None and cache.count(filter_key({"big": 1})) == 10
    cache.forget(filter_key({"a": 1}))  # as after a write: the ids go, the count stays
    assert cache.get(filter_key({"a": 1})) is None and cache.count(filter_key({"a": 1})) == 2
    cache.forget(filter_key({"a": 1}), count=True)
    assert cache.count(filter_key({"a": 1})) is None
    cache.put(filter_key({"c": 1}), 8, np.arange(1))
    cache.put(filter_key({"d": 1}), 8, np.arange(1))  # bounded: the least recent count goes
    assert cache.count(filter_key({"big": 1})) is None and cache.count(filter_key({"d": 1})) == 1
    cache.clear()
    assert cache.count(filter_key({"c": 1})) is None
