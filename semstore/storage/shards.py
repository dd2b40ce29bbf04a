"""Shards of a collection: the items whose id leaves one remainder modulo the shard count.

A shard is a stable, stateless split: an item's shard follows from its id alone, so every
shard replica can catch up from the database on its own (the same revision signal, with
``id % count = number`` in its queries), and a new item lands in exactly one shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement


@dataclass(frozen=True)
class Shard:
    """Shard ``number`` of ``count``: the items with ``id % count == number``."""

    number: int
    count: int

    def __post_init__(self) -> None:
        for name in ("number", "count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"shard {name} must be an int, got {value!r}")
        if self.count < 1:
            raise ValueError(f"a collection has at least one shard, got count={self.count}")
        if not 0 <= self.number < self.count:
            raise ValueError(f"shard number must be in 0..{self.count - 1}, got {self.number}")

    @property
    def label(self) -> str:
        """``shard-N-of-S``: a name for folders and logs."""
        return f"shard-{self.number}-of-{self.count}"

    def holds(self, ids: Any) -> np.ndarray:
        """A boolean mask: which of ``ids`` belong to this shard."""
        return np.asarray(ids, dtype=np.int64) % self.count == self.number

    def condition(self, id_column: Any) -> ColumnElement[bool]:
        """The SQL condition on an id column that keeps this shard's rows.

        Written as ``id - (id // count) * count`` (SQLAlchemy renders integer division for both dialects; ids are
        positive) rather than ``%``: the code loader renders its statement with literal values
        for a raw cursor, where psycopg's escaped ``%%`` would reach PostgreSQL as is.
        """
        return (id_column - (id_column // self.count) * self.count) == self.number


def shards_of(count: int) -> list[Shard]:
    """All ``count`` shards of a collection."""
    return [Shard(number, count) for number in range(count)]
