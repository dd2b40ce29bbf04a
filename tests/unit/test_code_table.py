"""SortedCodeTable: the IVF index's id -> code table, against a dict of the same operations."""

from __future__ import annotations

import numpy as np
import pytest

from semstore.index.code_table import SortedCodeTable


def _rows(ids: np.ndarray, width: int) -> np.ndarray:
    # a row derived from its id, so any mix-up of rows shows
    return ((ids[:, None] * 31 + np.arange(width)) % 251).astype(np.uint8)


def test_random_adds_and_removes_match_a_dict() -> None:
    rng = np.random.default_rng(0)
    width = 5
    table = SortedCodeTable(width)
    reference: dict[int, bytes] = {}
    next_id = 0
    for step in range(300):
        if step % 7 == 3 and reference:  # out-of-order ids now and then
            fresh = np.setdiff1d(rng.integers(0, next_id + 1, 20), np.fromiter(reference, np.int64))
        else:
            fresh = np.arange(next_id, next_id + int(rng.integers(1, 50)), dtype=np.int64)
            rng.shuffle(fresh)
        fresh = np.unique(fresh)
        rng.shuffle(fresh)
        table.add(fresh, _rows(fresh, width))
        reference.update({int(i): row.tobytes() for i, row in zip(fresh, _rows(fresh, width))})
        next_id = max(next_id, int(fresh.max(initial=-1)) + 1)
        if step % 5 == 0 and reference:
            gone = np.unique(rng.choice(np.fromiter(reference, np.int64), size=min(10, len(reference)), replace=False))
            table.remove(gone)
            for i in gone.tolist():
                del reference[i]
        assert len(table) == len(reference)
    expected = np.array(sorted(reference), dtype=np.int64)
    np.testing.assert_array_equal(table.ids, expected)
    probe = rng.permutation(expected)[:200]
    assert [row.tobytes() for row in table.rows(probe)] == [reference[int(i)] for i in probe]
    assert not table.has_duplicates()
    absent = np.array([next_id + 5, -1], dtype=np.int64)
    assert not table.contains(absent).any()
    with pytest.raises(KeyError, match="not in the table"):
        table.rows(absent)


def test_appends_in_order_grow_the_buffers_by_a_quarter_not_per_add() -> None:
    table = SortedCodeTable(16, np.arange(10_000, dtype=np.int64), np.zeros((10_000, 16), np.uint8))
    assert table.nbytes == 10_000 * 24  # built exactly, no spare room
    table.add(np.array([10_000], dtype=np.int64), np.ones((1, 16), np.uint8))
    grown = table.nbytes
    assert grown == (10_000 + 2_500) * 24
    for i in range(10_001, 12_000):
        table.add(np.array([i], dtype=np.int64), np.ones((1, 16), np.uint8))
    assert table.nbytes == grown  # the spare room absorbed 2,000 more single adds
    assert len(table) == 12_000 and table.ids[-1] == 11_999
