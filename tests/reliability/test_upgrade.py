"""Item 7: upgrade safety, and SQLite -> PostgreSQL transfer with the same search results.

A database is migrated to the FIRST Alembic revision only and populated with SQL written
against that revision's schema (not the ORM models, which follow head), then upgraded to
head: every item, its codes, metadata and source must come back through the library, the
index must hold exactly those ids and every item must find itself. Revision 0002's
conversions are checked on the stored values: 64-hex SHA-256 content hashes become their
first 16 bytes, created_at keeps its second (integer seconds on SQLite), an old upload
still verifies, ids of deleted items are not reused; a downgrade to 0001 and a second
upgrade give the same values back. A collection exported
from SQLite and imported into PostgreSQL must return the same search results (sources,
order and scores) for text, image and item queries.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

import semstore
from semstore import storage, transfer
from semstore.ingest.images import content_hash, open_image
from semstore.storage import head_revision
from semstore.storage.migrate import alembic_config
from tests.reliability.conftest import COLLECTION, NUM_SUBVECTORS, encoder_factory, figures, image_bytes, scaled, settings_for

pytestmark = pytest.mark.reliability

ITEMS = scaled(40, 400)


def _first_revision() -> str:
    base = ScriptDirectory.from_config(alembic_config()).get_base()
    assert base == "0001", base  # the SQL below is written against this revision's schema
    return base


def _created_at(index: int) -> datetime:
    """The created_at written for legacy item ``index``: sub-seconds on odd items, as ORM writes left them."""
    return datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC) + timedelta(seconds=3671 * index, microseconds=137_001 * (index % 2))


def _populate_at_first_revision(url: str, codec, encoder, uploads: Path) -> dict[int, dict]:  # noqa: ANN001
    """Items inserted with plain SQL against revision 0001's tables; returns what was written, by id.

    As 0001 stored them: the full 64-hex SHA-256 as content hash, created_at as text on
    SQLite (``YYYY-MM-DD HH:MM:SS[.ffffff]``; item 0 gets the server default), and item 1
    an upload whose URI and kept original are named by the full SHA-256. The last item
    written is deleted again, so its id is above every stored one.
    """
    images = [image_bytes(30_000 + i) for i in range(ITEMS)]
    codes = codec.encode(encoder.encode_images([open_image(data, max_pixels=10**6) for data in images]))
    engine = create_engine(url)
    postgres = engine.dialect.name == "postgresql"
    as_json = "CAST(:{} AS JSONB)" if postgres else ":{}"
    written: dict[int, dict] = {}
    with engine.begin() as connection:
        codec_id = connection.execute(
            text(f"INSERT INTO codecs (content_hash, config, weights) VALUES (:hash, {as_json.format('config')}, :weights) RETURNING id"),
            {"hash": codec.content_hash, "config": json.dumps(codec.config.to_dict()), "weights": codec.to_bytes()},
        ).scalar_one()
        collection_id = connection.execute(
            text("INSERT INTO collections (name, model, pretrained, dim, codec_id, revision) VALUES (:name, :model, NULL, :dim, :codec, :rev) RETURNING id"),
            {"name": COLLECTION, "model": "semstore-tiny-test", "dim": codec.dim, "codec": codec_id, "rev": ITEMS},
        ).scalar_one()
        for index, (data, row) in enumerate(zip(images, codes)):
            metadata = {"n": index, "tag": f"legacy-{index % 3}", "quote": "it's"}
            blob = np.asarray(row, dtype=np.uint8).tobytes()
            sha256 = hashlib.sha256(data).hexdigest()
            uri = f"upload://{sha256}/legacy.png" if index == 1 else f"/legacy/{index}.png"
            created = None if index == 0 else _created_at(index)
            stamp = created and f"{created:%Y-%m-%d %H:%M:%S}" + (f".{created:%f}" if created.microsecond else "")
            item_id = connection.execute(
                text(
                    "INSERT INTO items (collection_id, source_uri, content_hash, width, height, metadata, codes, codec_id, created_at) "
                    f"VALUES (:c, :uri, :hash, 40, 40, {as_json.format('meta')}, :codes, :codec, "
                    f"{'CURRENT_TIMESTAMP' if created is None else ':created' if postgres else ':stamp'}) RETURNING id"
                ),
                {"c": collection_id, "uri": uri, "hash": sha256, "meta": json.dumps(metadata),
                 "codes": blob, "codec": codec_id, "created": created, "stamp": stamp},  # fmt: skip
            ).scalar_one()
            written[item_id] = {"uri": uri, "metadata": metadata, "codes": blob, "image": data, "sha256": sha256, "created_at": created}
        removed = max(written)
        connection.execute(text("DELETE FROM items WHERE id = :id"), {"id": removed})
    engine.dispose()
    uploads.mkdir(parents=True)
    legacy = next(item for item in written.values() if item["uri"].startswith("upload://"))
    (uploads / f"{legacy['sha256']}.png").write_bytes(legacy["image"])
    del written[removed]
    return written


def _stored_items(url: str) -> dict[int, tuple[object, object]]:
    """Item id -> (content_hash, created_at) as the database holds them (no ORM conversion)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, content_hash, created_at FROM items")).all()
    finally:
        engine.dispose()
    return {row.id: (bytes(row.content_hash) if isinstance(row.content_hash, bytes | memoryview) else row.content_hash,
                     row.created_at) for row in rows}  # fmt: skip


def test_upgrade_from_the_first_revision_keeps_every_item(db_url: str, tmp_path: Path, shipped_codec, tiny_encoder) -> None:  # noqa: ANN001
    codec, _ = shipped_codec
    first = _first_revision()
    command.upgrade(alembic_config(db_url), first)
    settings = settings_for(db_url, tmp_path / "data")
    started = datetime.now(UTC).replace(microsecond=0)
    written = _populate_at_first_revision(db_url, codec, tiny_encoder, settings.upload_directory(COLLECTION))
    populated = datetime.now(UTC)
    database = semstore.connect(db_url, settings=settings, encoder_factory=encoder_factory(tiny_encoder))  # upgrades to head
    try:
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
        photos = database.collection(COLLECTION)
        assert photos.codec.content_hash == codec.content_hash
        with database.sessions() as session:
            rows = {item.id: item for item in storage.get_items(session, collection_id=photos.id, ids=sorted(written))}
        for item_id, expected in written.items():
            item = photos.get(item_id)
            assert (item.source_uri, item.metadata) == (expected["uri"], expected["metadata"])
            assert photos.codes(item_id).tobytes() == expected["codes"]
            assert rows[item_id].content_hash == expected["sha256"][:32] == content_hash(expected["image"])
            created = rows[item_id].created_at
            assert created.utcoffset() == timedelta(0)
            if expected["created_at"] is None:
                assert started <= created <= populated
            else:  # to the second (SQLite keeps whole seconds now; PostgreSQL kept timestamptz)
                assert created.replace(microsecond=0) == expected["created_at"].replace(microsecond=0)
        raw = _stored_items(db_url)
        assert {item_id: value[0] for item_id, value in raw.items()} == {
            item_id: hashlib.sha256(expected["image"]).digest()[:16] for item_id, expected in written.items()
        }
        if database.engine.dialect.name == "sqlite":
            assert {type(value[1]) for value in raw.values()} == {int}
        assert sorted(photos.index.ids().tolist()) == sorted(written)
        assert photos.stats().items == len(written) and photos.stats().code_bytes == len(written) * NUM_SUBVECTORS
        found = 0
        for item_id in random.Random(0).sample(sorted(written), 10):
            hits = photos.search(image=written[item_id]["image"], k=3)
            found += any(hit.id == item_id and hit.score >= hits[0].score - 1e-5 for hit in hits)
            assert photos.search(item=item_id, k=1, where={"tag": written[item_id]["metadata"]["tag"]})[0].score > 0.999
        assert found == 10
        # the upload stored under its full SHA-256 still verifies against the shortened hash
        (legacy_id,) = [item_id for item_id, expected in written.items() if expected["uri"].startswith("upload://")]
        assert photos.source_bytes(legacy_id) == written[legacy_id]["image"]
        # uploading it again is skipped, and leaves no copy under the short hash behind
        def kept_files() -> list[Path]:  # the originals, not the folder's writer lock file
            return sorted(path for path in settings.upload_directory(COLLECTION).iterdir() if path.name != ".lock")

        uploads = kept_files()
        repeat = photos.add_images([("legacy-again.png", written[legacy_id]["image"])])
        assert (repeat.added, repeat.skipped) == (0, 1)
        assert kept_files() == uploads
        assert photos.source_bytes(legacy_id) == written[legacy_id]["image"]
        # an image stored before the upgrade is recognised as a duplicate
        again = photos.add_images([("again.png", written[max(written)]["image"])], keep_originals=False)
        assert (again.added, again.skipped) == (0, 1)
        # and the upgraded database takes new items, without reusing the id of the item deleted before it
        report = photos.add_images([("new.png", image_bytes(99_999))], keep_originals=False)
        assert report.added == 1 and report.added_items[0][1] > max(written) + 1
    finally:
        database.close()

    # downgrade to 0001 and back: the 0001 column types, the same 128 bits, the same seconds
    upgraded = _stored_items(db_url)
    command.downgrade(alembic_config(db_url), first)
    downgraded = _stored_items(db_url)
    assert {item_id: value[0] for item_id, value in downgraded.items()} == {
        item_id: value[0].hex() for item_id, value in upgraded.items()
    }
    if db_url.startswith("sqlite"):
        assert {item_id: value[1] for item_id, value in downgraded.items()} == {
            item_id: f"{datetime.fromtimestamp(value[1], UTC):%Y-%m-%d %H:%M:%S}" for item_id, value in upgraded.items()
        }
    command.upgrade(alembic_config(db_url), "head")
    assert _stored_items(db_url) == upgraded
    figures(f"upgrade[{db_url.split(':')[0]}]", from_revision=first, to_revision=head_revision(), items=len(written), items_lost=0, codes_changed=0)


@pytest.mark.postgres
def test_sqlite_export_postgres_import_same_search_results(postgres_url: str, tmp_path: Path, shipped_codec, tiny_encoder) -> None:  # noqa: ANN001
    codec, _ = shipped_codec
    factory = encoder_factory(tiny_encoder)
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    source = semstore.connect(source_url, settings=settings_for(source_url, tmp_path / "a"), encoder_factory=factory)
    target = semstore.connect(postgres_url, settings=settings_for(postgres_url, tmp_path / "b"), encoder_factory=factory)
    try:
        photos = source.create_collection(COLLECTION, codec=codec)
        report = photos.add_images([(f"p{i}.png", image_bytes(40_000 + i)) for i in range(ITEMS)], metadata={"set": "x"})
        photos.delete([report.added_items[3][1]])
        archive = tmp_path / "photos.zip"
        transfer.export_collection(source, COLLECTION, archive)
        imported = transfer.import_collection(target, archive)
        assert (imported.created, imported.added) == (True, ITEMS - 1)
        copy = target.collection(COLLECTION)
        queries = [{"text": t} for t in ("a red circle", "blue sky", "'; DROP TABLE items; --")]
        queries += [{"image": image_bytes(40_000 + i)} for i in (0, 5, 11)] + [{"image": image_bytes(123)}]
        compared = 0
        for query in queries:
            for where in (None, {"set": "x"}):
                left = photos.search(**query, k=10, where=where)
                right = copy.search(**query, k=10, where=where)
                assert [h.source_uri for h in left] == [h.source_uri for h in right], query
                assert np.allclose([h.score for h in left], [h.score for h in right], atol=1e-5)
                compared += 1
        copy_ids = {hit.source_uri: hit.id for hit in copy.search(text="everything", k=ITEMS)}
        alive = [(uri, item_id) for uri, item_id in report.added_items if uri in copy_ids]
        assert len(alive) == ITEMS - 1
        for source_uri, item_id in alive[:8]:
            left = photos.search(item=item_id, k=10)
            right = copy.search(item=copy_ids[source_uri], k=10)
            assert [h.source_uri for h in left] == [h.source_uri for h in right], source_uri
            assert np.allclose([h.score for h in left], [h.score for h in right], atol=1e-5)
            compared += 1
    finally:
        source.close()
        target.close()
    figures("sqlite->postgresql transfer", items=ITEMS - 1, queries_compared=compared, differing_results=0)
