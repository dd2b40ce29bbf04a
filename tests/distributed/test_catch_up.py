"""An index held by one process catches up with writes made through another, in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert, select

import semstore
from semstore import storage
from semstore.config import Settings
from semstore.encoders import TINY_TEST_MODEL
from semstore.ingest import content_hash
from semstore.replica import catch_up
from tests.e2e.conftest import encode, make_image

COUNT = 10


@pytest.fixture
def two_processes(db_url: str, tmp_path: Path) -> tuple[semstore.Collection, semstore.Collection]:
    """A writer's and a replica's view of the same collection (two Database objects)."""
    def settings(name: str) -> Settings:
        return Settings(data_dir=tmp_path / name, database_url=db_url, model=TINY_TEST_MODEL, pretrained=None,
                        codec_num_subvectors=8, batch_size=16)

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(COUNT):
        (folder / f"img{i:02d}.png").write_bytes(encode(make_image(i, size=48), "PNG"))
    writer = semstore.connect(settings=settings("writer")).create_collection("photos")
    assert writer.add([folder], progress=False).added == COUNT
    replica = semstore.connect(settings=settings("replica")).collection("photos")
    assert replica.index is not None and len(replica.index) == COUNT
    return writer, replica


def _copy_item_with_id(collection: semstore.Collection, source_id: int, new_id: int) -> None:
    """Insert a copy of an item under an explicit (lower) id: what a transaction that took
    its ids early but committed late looks like to a reader."""
    with storage.transaction(collection.database.sessions) as session:
        row = session.execute(select(storage.Item).where(storage.Item.id == source_id)).scalar_one()
        session.execute(insert(storage.Item).values(
            id=new_id, collection_id=row.collection_id, source_uri="late://" + row.source_uri,
            content_hash=content_hash(b"late-" + row.content_hash.encode()), codes=row.codes, codec_id=row.codec_id, metadata_={},
        ))
        session.execute(
            storage.Collection.__table__.update()
            .where(storage.Collection.id == collection.id)
            .values(revision=storage.Collection.revision + 1)
        )


def test_adds_deletes_and_late_commits_are_applied_in_place(two_processes: tuple[semstore.Collection, semstore.Collection]) -> None:
    writer, replica = two_processes
    index = replica.index
    ids = sorted(index.ids().tolist())

    writer.delete([ids[4]])
    assert replica.index is index and ids[4] not in index.ids()
    assert len(index) == COUNT - 1

    # Same count and same largest id as before, other ids: only the id sum tells.
    writer.delete([ids[6]])
    _copy_item_with_id(writer, ids[0], ids[4])
    result = catch_up(index, sessions=replica.database.sessions, collection_id=replica.id)
    assert result.full_compare and (result.added, result.removed) == (1, 1)
    assert sorted(index.ids().tolist()) == sorted(set(ids) - {ids[6]})
    np.testing.assert_array_equal(index.codes_for([ids[4]]), index.codes_for([ids[0]]))

    # The next access finds nothing to do (the version now matches).
    assert replica.index is index
    with replica.database.sessions() as session:
        state = storage.collection_state(session, collection_id=replica.id)
        stored_ids, stored_codes = storage.load_codes(
            session, collection_id=replica.id, num_subvectors=index.codec.num_subvectors, dtype=index.codec.code_dtype
        )
    assert (state.count, len(index)) == (COUNT - 1, COUNT - 1)
    np.testing.assert_array_equal(index.codes_for(stored_ids), stored_codes)


def test_new_items_are_fetched_without_a_rebuild(
    two_processes: tuple[semstore.Collection, semstore.Collection], tmp_path: Path
) -> None:
    writer, replica = two_processes
    index = replica.index
    extra = tmp_path / "extra.png"
    extra.write_bytes(encode(make_image(99, size=48), "PNG"))
    new_id = writer.add([extra], progress=False).added_items[0][1]
    result = catch_up(index, sessions=replica.database.sessions, collection_id=replica.id)
    assert (result.added, result.removed, result.full_compare) == (1, 0, False)
    assert replica.search(image=extra, k=1)[0].id == new_id
