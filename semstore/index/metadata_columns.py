"""The filterable metadata of an index's items, held in memory beside the index.

A filtered search at 10^6 items that asks the database which ids match costs several
milliseconds of SQL and transfer (10^4 ids for a 1 % filter), several times the index search
itself. :class:`MetadataColumns` keeps, per top-level metadata key, one small integer per item
(the value's number in that key's dictionary, ``-1`` when absent), aligned with a sorted array
of item ids. A filter then costs a vectorised comparison (about half a millisecond per key at
10^6 items) or, for a broad filter checked against a few hundred index candidates, a few
microseconds; and the number of items holding each value is kept, so a filter's selectivity is
known before anything is scanned.

Values follow the SQL filters exactly (:mod:`semstore.conditions`): ``"1"``, ``1`` and
``true`` differ, ``1`` equals ``1.0`` (:func:`value_term`); every condition of a filter (an
equality, a range, ``$in``, ``$ne``, ``$exists``) becomes a boolean table over the key's value
numbers, so a row's test is one table look-up whatever the operator. Only scalar members are filterable, as in the postings
tables. A key with more than ``max_distinct`` values (a file name, a unique tag) is dropped:
its dictionary would outweigh the codes, and filters on it go to the database instead
(:meth:`covers` says which filters the columns can answer).

Not thread-safe by itself: the index service mutates it under its apply lock, and a reader
that races a mutation sees either state of a row (as with the index), never a torn array.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import itertools

import numpy as np

from semstore.conditions import Condition, conditions_of
from semstore.exif_fields import PREFIX as EXIF_PREFIX

#: A key with more distinct values than this is not held in memory (filters on it use SQL).
DEFAULT_MAX_DISTINCT = 65_536

#: ``(kind, value)``: the filter's notion of a value ("bool" / "text" / "number").
Term = tuple[str, Any]
#: ``(item id, key, term)``: one scalar member of one item's metadata.
Posting = tuple[int, str, Term]
#: ``(key, term, ids)``: the items (int64 ids) whose ``key`` holds ``term``.
TermIds = tuple[str, Term, np.ndarray]

_ABSENT = -1
_VERSIONS = itertools.count(1)  # shared: a reloaded MetadataColumns never repeats a version


def value_term(value: Any) -> Term | None:
    """The term of a scalar metadata value, None for anything not filterable (objects, lists, null)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, str):
        return ("text", value)
    if isinstance(value, int | float):
        return ("number", value)  # (1 and 1.0 are one dict key: they hash and compare equal)
    return None


def metadata_postings(item_id: int, metadata: Mapping[str, Any] | None) -> list[Posting]:
    """The postings of one item's metadata (its filterable top-level members)."""
    found = []
    for key, value in (metadata or {}).items():
        term = value_term(value)
        if term is not None:
            found.append((int(item_id), str(key), term))
    return found


@dataclass
class _Dictionary:
    """One key's values: their numbers, how many items hold each, and the values as arrays
    (for ranges: numbers as float64, NaN where the value is no number; strings, None where none)."""

    terms: dict[Term, int] = field(default_factory=dict)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _values: list[Term] = field(default_factory=list)
    _arrays: tuple[int, np.ndarray, np.ndarray] | None = None

    def number(self, term: Term) -> int:
        """The number of ``term``, a new one if it has none (its count starts at 0)."""
        found = self.terms.get(term)
        if found is None:
            found = self.terms[term] = len(self.terms)
            self._values.append(term)
            if found >= self.counts.size:
                self.counts = np.concatenate([self.counts, np.zeros(max(16, self.counts.size), dtype=np.int64)])
        return found

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(numbers, texts)`` of every value number (built once per dictionary size)."""
        cached = self._arrays
        if cached is None or cached[0] != len(self._values):
            numbers = np.array([float(v) if kind == "number" else np.nan for kind, v in self._values], dtype=np.float64)
            texts = np.array([v if kind == "text" else None for kind, v in self._values], dtype=object)
            cached = self._arrays = (len(self._values), numbers, texts)
        return cached[1], cached[2]

    def table(self, condition: Condition) -> np.ndarray:
        """Which value numbers satisfy ``condition``: a boolean table of one entry per number
        and a last one for items without a value (a code of -1 indexes it)."""
        size = len(self._values)
        op, operand = condition.op, condition.value
        if op == "exists":
            table = np.full(size + 1, operand, dtype=bool)
            table[-1] = not operand
            return table
        if op in ("ne", "nin"):
            return ~self.table(Condition("eq" if op == "ne" else "in", operand))
        table = np.zeros(size + 1, dtype=bool)
        if op in ("eq", "in"):
            for item in (operand,) if op == "eq" else operand:
                term = value_term(item)
                number = self.terms.get(term) if term is not None else None
                if number is not None:
                    table[number] = True
            return table
        numbers, texts = self.arrays()
        compare = {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}[op]
        if isinstance(operand, str):
            holds = np.fromiter((t is not None and bool(compare(t, operand)) for t in texts), dtype=bool, count=size)
        else:
            with np.errstate(invalid="ignore"):
                holds = compare(numbers, float(operand))
        table[:size] = holds
        return table


@dataclass(frozen=True)
class _Rows:
    """The row arrays, replaced as one (a reader takes them once: never arrays of two sizes)."""

    ids: np.ndarray
    live: np.ndarray
    codes: dict[str, np.ndarray]


def _select(table: np.ndarray, codes: np.ndarray | None) -> np.ndarray | bool:
    """``table[codes]``: which rows' value numbers satisfy the table (no codes: no row has a value)."""
    if codes is None:
        return bool(table[-1])
    hits = np.flatnonzero(table)
    if hits.size == 1 and hits[0] != table.size - 1:
        # one value: a comparison, 3-4x faster than the gather at 10^6 rows (with a Python int:
        # a numpy int64 scalar would make numpy cast all the int32 codes to int64 first)
        return codes == int(hits[0])
    return table[codes]


class MetadataColumns:
    """Per-key value columns of a set of items (see the module docstring)."""

    def __init__(self, *, max_distinct: int = DEFAULT_MAX_DISTINCT) -> None:
        self.max_distinct = max_distinct
        self._rows = self._with_room(np.empty(0, dtype=np.int64), np.empty(0, dtype=bool), {})
        self._dictionaries: dict[str, _Dictionary] = {}
        self._dropped: set[str] = set()
        self._removed = 0
        #: New on every change (and unique across instances): what a cache of results computed
        #: from these columns is keyed by.
        self.version = next(_VERSIONS)

    # -- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._rows.ids.size) - self._removed

    @property
    def memory_bytes(self) -> int:
        """Bytes of the arrays (dictionaries of values not counted: at most ``max_distinct`` per key)."""
        rows = self._rows

        def held(array: np.ndarray) -> int:  # (with the spare room kept for appends)
            return int((array.base if array.base is not None else array).nbytes)

        return held(rows.ids) + held(rows.live) + sum(held(c) for c in rows.codes.values())

    @property
    def keys(self) -> list[str]:
        """The keys held in memory."""
        return sorted(self._rows.codes)

    def ids(self) -> np.ndarray:
        """The ids held, ascending."""
        rows = self._rows
        return rows.ids[rows.live]

    def covers(self, where: Mapping[str, Any]) -> bool:
        """Whether these columns can answer ``where``: no key of it was dropped, and none is an
        EXIF field (those live in the database's typed ``item_exif`` table)."""
        return not any(key in self._dropped or key.startswith(EXIF_PREFIX) for key in where)

    def estimate(self, where: Mapping[str, Any]) -> int:
        """An upper bound of the items matching ``where`` (exact for one key)."""
        best = len(self)
        for key, value in where.items():
            table = self._table(key, value)
            if table is None:
                continue
            dictionary = self._dictionaries.get(key)
            counts = dictionary.counts[: table.size - 1] if dictionary is not None else np.zeros(0, dtype=np.int64)
            found = int(counts[table[:-1]].sum()) + (len(self) - int(counts.sum()) if table[-1] else 0)
            best = min(best, found)
        return best

    def matching(self, where: Mapping[str, Any]) -> np.ndarray:
        """Ids (ascending) of the items that satisfy ``where`` (a checked filter, see
        :mod:`semstore.conditions`; these columns must :meth:`covers` it)."""
        self._check_covered(where)
        rows = self._rows
        mask = rows.live if self._removed else None  # (no removed rows: no need to look at them)
        for key, value in where.items():
            table = self._table(key, value)
            if table is None:
                continue
            selected = _select(table, rows.codes.get(key))
            if isinstance(selected, bool):  # (no item holds the key: all or nothing)
                if not selected:
                    return rows.ids[:0].copy()
                continue
            mask = selected if mask is None else mask & selected  # (never bool & array: 10x slower in numpy)
        return rows.ids.copy() if mask is None else rows.ids[mask]

    def match(self, where: Mapping[str, Any], candidates: np.ndarray) -> np.ndarray:
        """The ``candidates`` (ids, in their order) that are held and satisfy ``where``."""
        self._check_covered(where)
        rows = self._rows
        candidates = np.asarray(candidates, dtype=np.int64)
        if rows.ids.size == 0:
            return candidates[:0]
        positions = np.minimum(np.searchsorted(rows.ids, candidates), rows.ids.size - 1)
        keep = (rows.ids[positions] == candidates) & rows.live[positions]
        for key, value in where.items():
            table = self._table(key, value)
            if table is not None:
                codes = rows.codes.get(key)
                keep &= _select(table, codes[positions] if codes is not None else None)
        return candidates[keep]

    def _table(self, key: str, value: Any) -> np.ndarray | None:
        """The key's table of value numbers satisfying all its conditions (None: any value does)."""
        dictionary = self._dictionaries.get(key) if key in self._rows.codes else None
        if dictionary is None:
            dictionary = _Dictionary()  # no item holds the key: every item "has no value"
        table = None
        for condition in conditions_of(value):
            found = dictionary.table(condition)
            table = found if table is None else table & found
        return table

    def _check_covered(self, where: Mapping[str, Any]) -> None:
        if not self.covers(where):
            raise ValueError(f"keys {sorted(set(where) & self._dropped)} are not held in memory (too many values)")

    # -- writing -------------------------------------------------------------------------
    def set_items(self, ids: Iterable[int], postings: Iterable[Posting]) -> None:
        """Make ``ids`` hold exactly ``postings`` (theirs: every posting's id is among ``ids``);
        ids not held yet are added. An id with no posting holds no value."""
        grouped: dict[tuple[str, Term], list[int]] = {}
        for item_id, key, term in postings:
            grouped.setdefault((key, term), []).append(item_id)
        self.set_terms(ids, ((key, term, np.asarray(found, dtype=np.int64)) for (key, term), found in grouped.items()))

    def set_terms(self, ids: Iterable[int] | np.ndarray, groups: Iterable[TermIds]) -> None:
        """:meth:`set_items` with the postings grouped by term: ``(key, term, ids holding it)``
        (the form a whole collection is read in: one row per distinct value)."""
        wanted = np.unique(np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64))
        if wanted.size == 0:
            return
        self._insert(np.setdiff1d(wanted, self.ids(), assume_unique=True))
        rows = self._rows
        self._clear(rows, np.searchsorted(rows.ids, wanted))
        self._write(groups)
        self.version = next(_VERSIONS)

    def remove(self, ids: Iterable[int]) -> int:
        """Stop holding ``ids`` (those not held are ignored); returns how many were removed."""
        wanted = np.unique(np.fromiter((int(i) for i in ids), dtype=np.int64))
        rows = self._rows
        if wanted.size == 0 or rows.ids.size == 0:
            return 0
        positions = np.minimum(np.searchsorted(rows.ids, wanted), rows.ids.size - 1)
        positions = positions[(rows.ids[positions] == wanted) & rows.live[positions]]
        if positions.size == 0:
            return 0
        rows.live[positions] = False
        self._clear(rows, positions)
        self._removed += int(positions.size)
        if self._removed > max(1024, rows.ids.size // 4):
            self._compact()
        self.version = next(_VERSIONS)
        return int(positions.size)

    def _clear(self, rows: _Rows, positions: np.ndarray) -> None:
        """Rows at ``positions`` hold no value any more (the counts follow)."""
        for key, codes in rows.codes.items():
            held = codes[positions]
            held = held[held != _ABSENT]
            if held.size:
                np.subtract.at(self._dictionaries[key].counts, held, 1)
            codes[positions] = _ABSENT

    def _insert(self, new_ids: np.ndarray) -> None:
        """Add rows (holding nothing) for ids not held, keeping the ids sorted."""
        if new_ids.size == 0:
            return
        rows = self._rows
        at = np.searchsorted(rows.ids, new_ids)
        dead = np.zeros(new_ids.size, dtype=bool)
        inside = at < rows.ids.size
        dead[inside] = rows.ids[at[inside]] == new_ids[inside]
        if dead.any():  # removed earlier, its row still there: live again
            rows.live[at[dead]] = True
            self._removed -= int(dead.sum())
            new_ids, at = new_ids[~dead], at[~dead]
        if new_ids.size == 0:
            return
        if rows.ids.size == 0 or new_ids[0] > rows.ids[-1]:
            self._append(rows, new_ids)
            return
        # (rare: ids below the largest, e.g. a transaction that committed late)
        self._rows = self._with_room(
            np.insert(rows.ids, at, new_ids), np.insert(rows.live, at, True),
            {key: np.insert(codes, at, _ABSENT) for key, codes in rows.codes.items()},
        )  # fmt: skip

    def _append(self, rows: _Rows, new_ids: np.ndarray) -> None:
        """New ids above the largest: written into the spare room of the arrays (grown by half
        when full), so an upload of a few items costs a few writes, not a copy of every row.
        Readers hold views of the old length: the rows they see never change under them."""
        size, grow = rows.ids.size, new_ids.size
        ids_buffer = rows.ids.base if rows.ids.base is not None else rows.ids
        if size + grow > ids_buffer.size:
            self._rows = self._with_room(
                np.concatenate([rows.ids, new_ids]), np.concatenate([rows.live, np.ones(grow, dtype=bool)]),
                {key: np.concatenate([codes, np.full(grow, _ABSENT, dtype=np.int32)]) for key, codes in rows.codes.items()},
            )  # fmt: skip
            return
        end = size + grow
        ids_buffer[size:end] = new_ids
        live_buffer = rows.live.base
        live_buffer[size:end] = True
        codes = {}
        for key, column in rows.codes.items():
            buffer = column.base
            buffer[size:end] = _ABSENT
            codes[key] = buffer[:end]
        self._rows = _Rows(ids_buffer[:end], live_buffer[:end], codes)

    @staticmethod
    def _with_room(ids: np.ndarray, live: np.ndarray, codes: dict[str, np.ndarray]) -> _Rows:
        """Rows of these arrays, in buffers with room for half as many more."""
        size = ids.size
        capacity = max(1024, size + size // 2)

        def roomy(values: np.ndarray, fill: Any) -> np.ndarray:
            buffer = np.full(capacity, fill, dtype=values.dtype)
            buffer[:size] = values
            return buffer[:size]

        return _Rows(roomy(ids, 0), roomy(live, False), {key: roomy(column, _ABSENT) for key, column in codes.items()})

    def _write(self, groups: Iterable[TermIds]) -> None:
        rows = self._rows
        added: dict[str, np.ndarray] = {}
        for key, term, ids in groups:
            if key in self._dropped:
                continue
            dictionary = self._dictionaries.setdefault(key, _Dictionary())
            number = dictionary.number(term)
            if len(dictionary.terms) > self.max_distinct:
                self._drop(key)
                continue
            codes = rows.codes.get(key)
            if codes is None:
                codes = added.get(key)
            if codes is None:  # (a buffer as long as the ids' own, so that appends find room in it too)
                capacity = rows.ids.base.size if rows.ids.base is not None else rows.ids.size
                codes = added[key] = np.full(capacity, _ABSENT, dtype=np.int32)[: rows.ids.size]
            codes[np.searchsorted(rows.ids, ids)] = number
            dictionary.counts[number] += ids.size
        if added or any(key not in self._dictionaries for key in rows.codes):
            kept = {key: codes for key, codes in rows.codes.items() if key in self._dictionaries}
            self._rows = _Rows(rows.ids, rows.live, {**kept, **{k: c for k, c in added.items() if k in self._dictionaries}})

    def _drop(self, key: str) -> None:
        """Stop holding ``key`` (too many values): filters on it go to the database."""
        self._dropped.add(key)
        self._dictionaries.pop(key, None)

    def _compact(self) -> None:
        rows = self._rows
        live = rows.live
        self._rows = self._with_room(rows.ids[live], np.ones(int(live.sum()), dtype=bool), {k: c[live] for k, c in rows.codes.items()})
        self._removed = 0

    def __repr__(self) -> str:
        return f"MetadataColumns(items={len(self)}, keys={self.keys}, dropped={sorted(self._dropped)})"
