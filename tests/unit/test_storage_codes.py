"""Packing code arrays into per-item byte strings, and the models' storage contract."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from semstore.storage import Base, NewItem, pack_codes


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pack_codes_row_bytes(dtype: type) -> None:
    codes = np.arange(3 * 4, dtype=dtype).reshape(3, 4)
    packed = pack_codes(codes)
    assert len(packed) == 3
    assert all(len(row) == 4 * np.dtype(dtype).itemsize for row in packed)
    restored = np.frombuffer(b"".join(packed), dtype=np.dtype(dtype).newbyteorder("<")).reshape(3, 4)
    np.testing.assert_array_equal(restored, codes)


def test_pack_codes_is_little_endian_whatever_the_input_order() -> None:
    big = np.array([[1, 256]], dtype=">u2")
    assert pack_codes(big) == [b"\x01\x00\x00\x01"]


def test_pack_codes_accepts_non_contiguous_views() -> None:
    codes = np.arange(20, dtype=np.uint8).reshape(4, 5)[:, ::2]
    assert pack_codes(codes) == [bytes(row) for row in np.ascontiguousarray(codes)]


@pytest.mark.parametrize("bad", [np.zeros(4, dtype=np.uint8), np.zeros((2, 2), dtype=np.float32)])
def test_pack_codes_rejects_non_code_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        pack_codes(bad)


def test_new_item_defaults() -> None:
    item = NewItem(source_uri="file:///a.jpg", content_hash="abc", codes=b"\x00" * 16, codec_id=1)
    assert (item.width, item.height, item.metadata) == (None, None, None)


def test_models_declare_no_float_or_array_columns() -> None:
    for table in Base.metadata.tables.values():
        for column in table.columns:
            assert not isinstance(column.type, sa.Float | sa.Numeric | sa.ARRAY), (table.name, column.name)


def test_items_table_shape() -> None:
    items = Base.metadata.tables["items"]
    assert not items.c.codes.nullable and isinstance(items.c.codes.type, sa.LargeBinary)
    assert not items.c.codec_id.nullable
    assert {fk.ondelete for fk in items.c.collection_id.foreign_keys} == {"CASCADE"}
    assert any(
        isinstance(c, sa.UniqueConstraint) and [col.name for col in c.columns] == ["collection_id", "content_hash"]
        for c in items.constraints
    )
    assert any(index.columns.keys()[0] == "collection_id" for index in items.indexes)
