"""EXIF facts at ingest (issue #17): read from real EXIF blocks of generated JPEGs, stored typed
in ``item_exif``, filterable by date range, camera, GPS radius and box (equal to a brute-force
check), broken EXIF simply absent; migration 0006 on a populated database and the backfill.
SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from typer.testing import CliRunner

import semstore
from semstore import exif_fields
from semstore.cli.app import app
from semstore.config import Settings
from semstore.encoders import TINY_TEST_MODEL
from semstore.storage.migrate import alembic_config
from tests.exif_photos import CAMERAS, Photo, exif_photos

PHOTOS = exif_photos()


def _settings(root: Path, url: str) -> Settings:
    return Settings(data_dir=root / "data", database_url=url, model=TINY_TEST_MODEL, pretrained=None,
                    codec_num_subvectors=8, batch_size=16, codec_bootstrap_size=32)  # fmt: skip


@pytest.fixture
def album(db_url: str, tmp_path: Path) -> tuple[semstore.Collection, dict[str, int]]:
    collection = semstore.connect(settings=_settings(tmp_path, db_url)).create_collection("album")
    report = collection.add_images([(p.name, p.data) for p in PHOTOS], metadata={"album": "trip"})
    assert report.added == len(PHOTOS), report.failed
    ids = {uri.rsplit("/", 1)[1]: item_id for uri, item_id in report.added_items}
    return collection, ids


def _stored_degrees(value: float) -> float:
    return round(value * 1_000_000) / 1_000_000


def test_exif_fields_are_stored_typed_and_shown(album: tuple[semstore.Collection, dict[str, int]]) -> None:
    collection, ids = album
    for photo in PHOTOS:
        exif = collection.get(ids[photo.name]).exif
        if photo.taken is None and photo.camera is None and photo.position is None:
            assert exif == {}, (photo.name, exif)  # no EXIF, or a broken block: simply absent
            continue
        if photo.taken:
            expected = photo.taken.isoformat() + (photo.offset or "")
            assert exif["taken_at"] == expected, photo.name
        else:
            assert "taken_at" not in exif
        assert (exif.get("make"), exif.get("model")) == (photo.camera or (None, None))
        if photo.position:
            assert exif["latitude"] == pytest.approx(photo.position[0], abs=2e-6)
            assert exif["longitude"] == pytest.approx(photo.position[1], abs=2e-6)
        else:
            assert "latitude" not in exif
    hits = collection.search_vector(collection.embed_query(text="x"), k=5)
    assert all(hit.exif == collection.get(hit.id).exif for hit in hits)  # hits carry them too


def _brute(ids: dict[str, int], keep) -> set[int]:  # noqa: ANN001
    return {ids[p.name] for p in PHOTOS if keep(p)}


def _distance(photo: Photo, lat: float, lon: float) -> float:
    assert photo.position is not None
    return float(exif_fields.distance_km(_stored_degrees(photo.position[0]), _stored_degrees(photo.position[1]), lat, lon))


CASES = [
    ({"exif.taken_at": {"$gte": "2023-03-01", "$lt": "2023-07-01"}},
     lambda p: p.taken is not None and datetime(2023, 3, 1) <= p.taken < datetime(2023, 7, 1)),
    ({"exif.taken_at": {"$lt": "2023-02-05T10:30"}}, lambda p: p.taken is not None and p.taken < datetime(2023, 2, 5, 10, 30)),
    ({"exif.taken_at": {"$exists": False}}, lambda p: p.taken is None),
    ({"exif.model": "X100V"}, lambda p: p.camera == CAMERAS[0]),
    ({"exif.make": {"$in": ["Canon", "Apple"]}}, lambda p: p.camera is not None and p.camera[0] in ("Canon", "Apple")),
    ({"exif.model": {"$ne": "X100V"}}, lambda p: p.camera != CAMERAS[0]),
    ({"exif.location": {"$near": [48.8566, 2.3522, 15.0]}}, lambda p: p.position is not None and _distance(p, 48.8566, 2.3522) <= 15.0),
    ({"exif.location": {"$near": [-16.8, 179.99, 20.0]}}, lambda p: p.position is not None and _distance(p, -16.8, 179.99) <= 20.0),
    ({"exif.location": {"$box": [40.6, -74.1, 40.8, -73.9]}},
     lambda p: p.position is not None and 40.6 <= p.position[0] <= 40.8 and -74.1 <= p.position[1] <= -73.9),
    ({"exif.location": {"$box": [-17.5, 179.9, -16.0, -179.9]}},  # west > east: across the antimeridian
     lambda p: p.position is not None and -17.5 <= p.position[0] <= -16.0 and (p.position[1] >= 179.9 or p.position[1] <= -179.9)),
    ({"exif.latitude": {"$gt": 45}, "album": "trip", "exif.taken_at": {"$gte": "2023-06-01"}},
     lambda p: p.position is not None and p.position[0] > 45 and p.taken is not None and p.taken >= datetime(2023, 6, 1)),
]


@pytest.mark.parametrize(("where", "keep"), CASES, ids=[json.dumps(c[0]) for c in CASES])
def test_exif_filters_equal_brute_force(album: tuple[semstore.Collection, dict[str, int]], where: dict, keep) -> None:  # noqa: ANN001
    collection, ids = album
    expected = _brute(ids, keep)
    assert 0 < len(expected) < len(PHOTOS), where  # (the data makes every case select some photos, not all)
    found = {hit.id for hit in collection.search_vector(collection.embed_query(text="a photo"), k=100, where=where)}
    assert found == expected, where


def test_the_cli_filters_by_date_camera_and_place(album: tuple[semstore.Collection, dict[str, int]]) -> None:
    collection, ids = album
    settings = collection.database.settings
    env = {"SEMSTORE_MODEL": TINY_TEST_MODEL, "SEMSTORE_PRETRAINED": None, "SEMSTORE_DEBUG": None}
    base = ["search", "a photo", "-c", "album", "-k", "100", "--json", "--db", settings.database_url,
            "--data-dir", str(settings.data_dir)]  # fmt: skip
    options = ["--taken-after", "2023-03-01", "--taken-before", "2023-07-01", "--camera", "X100V", "--near", "48.8566,2.3522,300"]
    done = CliRunner().invoke(app, [*base, *options], env=env)
    assert done.exit_code == 0, done.output
    hits = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    expected = _brute(
        ids, lambda p: CASES[0][1](p) and p.camera == CAMERAS[0] and p.position is not None and _distance(p, 48.8566, 2.3522) <= 300
    )
    assert expected and {hit["id"] for hit in hits} == expected
    assert all(hit["exif"]["model"] == "X100V" for hit in hits)
    bad = CliRunner().invoke(app, [*base, "--taken-after", "2023-03-01T00:00+01:00"], env=env)
    assert bad.exit_code == 1 and "time zone" in bad.output and "Traceback" not in bad.output
    bad_near = CliRunner().invoke(app, [*base, "--near", "48.8,2.3"], env=env)
    assert bad_near.exit_code == 1 and "LAT,LON,KM" in bad_near.output


def test_the_migration_upgrades_a_populated_database_and_the_backfill_reads_the_sources(
    db_url: str, tmp_path: Path
) -> None:
    # Photos on disk, ingested at head; then back to 0005 (no item_exif) and up again: the
    # table is empty, as for a database that stored its items before 0006.
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in PHOTOS:
        (folder / photo.name).write_bytes(photo.data)
    collection = semstore.connect(settings=_settings(tmp_path, db_url)).create_collection("album")
    collection.add(folder, progress=False)
    before = {hit.source_uri: hit.exif for hit in collection.search_vector(collection.embed_query(text="x"), k=100)}
    assert sum(bool(exif) for exif in before.values()) >= 30
    collection.database.close()
    command.downgrade(alembic_config(db_url), "0005")
    command.upgrade(alembic_config(db_url), "head")

    reopened = semstore.connect(settings=_settings(tmp_path, db_url)).collection("album")
    assert all(hit.exif == {} for hit in reopened.search_vector(reopened.embed_query(text="x"), k=100))
    (folder / PHOTOS[0].name).write_bytes(b"changed since ingest")  # never misread: skipped
    report = reopened.backfill_exif()
    assert report.unavailable == 1 and report.read == len(PHOTOS) - 1
    assert report.found == sum(1 for uri, exif in before.items() if exif and not uri.endswith(PHOTOS[0].name))
    after = {hit.source_uri: hit.exif for hit in reopened.search_vector(reopened.embed_query(text="x"), k=100)}
    for uri, exif in before.items():
        assert after[uri] == ({} if uri.endswith(PHOTOS[0].name) else exif), uri
    march = {"exif.taken_at": {"$gte": "2023-03-01", "$lt": "2023-04-01"}}
    assert {h.source_uri for h in reopened.search_vector(reopened.embed_query(text="x"), k=100, where=march)} == {
        uri for uri, exif in before.items() if "2023-03" in exif.get("taken_at", "")[:7] and not uri.endswith(PHOTOS[0].name)
    }
    again = reopened.backfill_exif()  # a rerun reads only what still has no facts
    assert again.found == 0 and again.read + again.unavailable == len(PHOTOS) - report.found
