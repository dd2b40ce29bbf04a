"""MetadataColumns against a brute-force check of the filter over plain dicts."""

from __future__ import annotations

import numpy as np
import pytest

from semstore.conditions import check_filter, conditions_of, matches
from semstore.index.metadata_columns import MetadataColumns, metadata_postings


def brute(items: dict[int, dict], where: dict) -> list[int]:
    def kind(value) -> str:
        return "bool" if isinstance(value, bool) else "text" if isinstance(value, str) else "number"

    def equal(a, b) -> bool:
        return kind(a) == kind(b) and a == b

    return sorted(i for i, meta in items.items() if all(k in meta and equal(meta[k], v) for k, v in where.items()))


def load(columns: MetadataColumns, items: dict[int, dict]) -> None:
    columns.set_items(items, [p for i, meta in items.items() for p in metadata_postings(i, meta)])


def random_items(rng: np.random.Generator, ids) -> dict[int, dict]:
    values = ["a", "b", 1, 1.0, 2, True, False, "1"]
    items = {}
    for i in ids:
        meta = {}
        for key in ("camera", "flag", "tag"):
            if rng.random() < 0.7:
                meta[key] = values[int(rng.integers(len(values)))]
        items[int(i)] = meta
    return items


FILTERS = [{"camera": "a"}, {"camera": 1}, {"camera": True}, {"camera": "1"}, {"flag": False, "tag": 2},
           {"camera": "zzz"}, {"nokey": 1}, {"camera": 1.0, "flag": 1}, {}]


def test_matching_and_match_equal_brute_force_through_adds_updates_removes() -> None:
    rng = np.random.default_rng(0)
    items = random_items(rng, range(1, 400))
    columns = MetadataColumns()
    load(columns, items)
    for step in range(4):
        for where in FILTERS:
            expected = brute(items, where)
            assert columns.matching(where).tolist() == expected, (step, where)
            candidates = rng.choice(np.arange(0, 1200), size=200, replace=False)
            assert columns.match(where, candidates).tolist() == [c for c in candidates.tolist() if c in set(expected)]
            if len(where) == 1:
                assert columns.estimate(where) == len(expected)
            else:
                assert columns.estimate(where) >= len(expected)
        # the next round: remove some, update some, add new (some below the largest id)
        removed = rng.choice(sorted(items), size=40, replace=False).tolist()
        assert columns.remove(removed + [10_000]) == 40
        for i in removed:
            del items[i]
        updated = random_items(rng, rng.choice(sorted(items), size=50, replace=False))
        items.update(updated)
        load(columns, updated)
        added = random_items(rng, [*range(1000 + 100 * step, 1050 + 100 * step), *removed[:5]])
        items.update(added)
        load(columns, added)
        assert len(columns) == len(items)
        assert columns.ids().tolist() == sorted(items)


def test_a_key_with_too_many_values_is_dropped_and_not_answered() -> None:
    columns = MetadataColumns(max_distinct=10)
    items = {i: {"name": f"file-{i}", "camera": "a" if i % 2 else "b"} for i in range(1, 50)}
    load(columns, items)
    assert columns.keys == ["camera"]
    assert not columns.covers({"name": "file-3"}) and columns.covers({"camera": "a"})
    with pytest.raises(ValueError, match="name"):
        columns.matching({"name": "file-3", "camera": "a"})
    assert columns.matching({"camera": "b"}).tolist() == list(range(2, 50, 2))


def test_compaction_after_many_removals_keeps_every_live_item() -> None:
    columns = MetadataColumns()
    items = {i: {"k": i % 3} for i in range(1, 5001)}
    load(columns, items)
    columns.remove(range(1, 4001))
    assert columns.memory_bytes < 5000 * 13  # compacted: the removed rows are gone
    assert columns.matching({"k": 0}).tolist() == [i for i in range(4001, 5001) if i % 3 == 0]
    assert columns.estimate({"k": 0}) == len([i for i in range(4001, 5001) if i % 3 == 0])


OPERATOR_FILTERS = [
    {"camera": {"$gt": 1}}, {"camera": {"$gte": 1, "$lt": 2.5}}, {"camera": {"$lte": "a"}}, {"camera": {"$gt": "1"}},
    {"camera": {"$in": ["a", 2, True]}}, {"camera": {"$nin": ["a", 1]}}, {"camera": {"$ne": 1}},
    {"camera": {"$exists": True}}, {"camera": {"$exists": False}}, {"flag": {"$ne": True}, "tag": {"$in": [1, "b"]}},
    {"nokey": {"$exists": False}}, {"nokey": {"$ne": 3}}, {"nokey": {"$gt": 0}}, {"camera": {"$eq": 1.0}},
]


def brute_conditions(items: dict[int, dict], where: dict) -> list[int]:
    def ok(meta: dict, key: str, value) -> bool:  # noqa: ANN001
        present = key in meta and isinstance(meta[key], str | int | float | bool)
        return all(matches(c, present, meta.get(key)) for c in conditions_of(value))

    return sorted(i for i, meta in items.items() if all(ok(meta, k, v) for k, v in where.items()))


@pytest.mark.parametrize("where", OPERATOR_FILTERS, ids=[str(w) for w in OPERATOR_FILTERS])
def test_operators_equal_the_reference_semantics(where: dict) -> None:
    rng = np.random.default_rng(1)
    items = random_items(rng, range(1, 300))
    items.update({i: {} for i in range(300, 320)})  # items without any metadata: rows too
    columns = MetadataColumns()
    load(columns, items)
    check_filter(where)  # (the filters are valid ones)
    expected = brute_conditions(items, where)
    assert columns.matching(where).tolist() == expected
    candidates = np.arange(0, 400)
    assert columns.match(where, candidates).tolist() == expected
    assert columns.estimate(where) >= len(expected)
    if len(where) == 1:
        assert columns.estimate(where) == len(expected)


def test_many_small_appends_grow_in_place_and_stay_exact() -> None:
    columns = MetadataColumns()
    items: dict[int, dict] = {}
    next_id = 1
    for step in range(1500):  # uploads of a few items each, as a server sees them
        batch = {next_id + i: ({"k": step % 5} if i % 2 else {"other": "x"}) for i in range(3)}
        next_id += 3
        items.update(batch)
        load(columns, batch)
        if step == 10:
            columns.set_items([5], [(5, "late", ("text", "y"))])  # a new key while the arrays have spare room
            items[5] = {"late": "y"}
    assert columns.matching({"k": 3}).tolist() == sorted(i for i, m in items.items() if m.get("k") == 3)
    assert columns.matching({"late": "y"}).tolist() == [5]
    assert columns.estimate({"k": {"$in": [1, 2]}}) == sum(1 for m in items.values() if m.get("k") in (1, 2))
    # the spare room is at most about half the rows (amortised growth), per array
    assert columns.memory_bytes <= 1.6 * len(items) * (8 + 1 + 4 * len(columns.keys)) + 64 * 1024
