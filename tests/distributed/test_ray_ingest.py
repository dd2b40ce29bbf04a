"""Distributed ingest on a local Ray cluster (2 CPUs, no network) into the real PostgreSQL server.

One encoder actor is killed mid-run (``os._exit`` after its 3rd batch, see
:class:`semstore.distributed.FailOnce`); Ray restarts it and retries the lost batch. The
result must equal a single-process ingest of the same images with the same codec: every
image exactly once, identical codes per content hash.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray  # noqa: F401 - in the test extra: a missing Ray must fail CI, not skip the test
from sqlalchemy import func, select
from typer.testing import CliRunner

import semstore
from semstore import storage
from semstore.config import Settings
from semstore.distributed import FailOnce, RayIngestOptions
from semstore.encoders import TINY_TEST_MODEL
from semstore.ingest import content_hash
from tests.e2e.conftest import encode, make_image

pytestmark = [pytest.mark.ray, pytest.mark.slow]

IMAGE_COUNT = 240


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray-images")
    for i in range(IMAGE_COUNT):
        (folder / f"img{i:03d}.png").write_bytes(encode(make_image(i, size=64), "PNG"))
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    return folder


def _settings(root: Path, url: str) -> Settings:
    return Settings(
        data_dir=root / "data",
        database_url=url,
        model=TINY_TEST_MODEL,
        pretrained=None,
        batch_size=16,
        codec_num_subvectors=8,
        codec_bootstrap_size=96,
    )


def _codes_by_hash(db: semstore.Database, collection_id: int) -> dict[str, bytes]:
    with db.sessions() as session:
        rows = session.execute(
            select(storage.Item.content_hash, storage.Item.codes).where(storage.Item.collection_id == collection_id)
        ).all()
    return {digest: bytes(codes) for digest, codes in rows}


def test_killed_actor_is_retried_and_codes_match_single_process(
    local_ray: None, images: Path, postgres_url: str, tmp_path: Path
) -> None:
    db = semstore.connect(settings=_settings(tmp_path, postgres_url))
    single = db.create_collection("single")
    single_report = single.add([images], progress=False)
    assert single_report.added == IMAGE_COUNT and len(single_report.failed) == 1
    codec = single.codec
    assert codec is not None

    distributed = db.create_collection("distributed", codec=codec)
    # A third of the images are already stored, as if an earlier run had been killed.
    first_third = sorted(images.glob("img*.png"))[: IMAGE_COUNT // 3]
    assert distributed.add(first_third, progress=False).added == len(first_third)

    marker = tmp_path / "actor-killed"
    options = RayIngestOptions(workers=2, batch_size=16, read_batch_size=16, write_batch_size=32,
                               fail_once=FailOnce(after_batches=3, marker=str(marker)))
    report = distributed.add([images], ray=options, progress=False)

    assert marker.exists(), "the fault was not injected"
    assert report.added == IMAGE_COUNT - len(first_third)
    assert report.skipped == len(first_third)
    assert [f.source for f in report.failed] == [str(images / "broken.jpg")]

    expected = {content_hash(p.read_bytes()) for p in images.glob("img*.png")}
    with db.sessions() as session:
        count = session.scalar(select(func.count()).where(storage.Item.collection_id == distributed.id))
    assert count == IMAGE_COUNT
    codes = _codes_by_hash(db, distributed.id)
    assert set(codes) == expected
    reference = _codes_by_hash(db, single.id)
    differing = [digest for digest in expected if codes[digest] != reference[digest]]
    assert not differing, f"{len(differing)} of {IMAGE_COUNT} items have other codes than the single-process ingest"

    # The index sees every item, and a re-run adds nothing.
    assert len(distributed.index) == IMAGE_COUNT
    again = distributed.add([images], ray=options, progress=False)
    assert (again.added, again.skipped) == (0, IMAGE_COUNT)
    db.close()


def test_cli_ingest_with_ray_trains_the_codec_once_on_the_driver(local_ray: None, images: Path, tmp_path: Path) -> None:
    """A new collection: sampled embeddings are gathered to the driver, the codec trained there
    and shipped to the actors; the CLI reports it like a single-process ingest."""
    from semstore.cli import app

    env = {
        "SEMSTORE_DATA_DIR": str(tmp_path / "data"),
        "SEMSTORE_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "SEMSTORE_MODEL": TINY_TEST_MODEL,
        "SEMSTORE_PRETRAINED": "",
        "SEMSTORE_CODEC_NUM_SUBVECTORS": "8",
    }
    sample = sorted(images.glob("img*.png"))[:24]
    result = CliRunner().invoke(app, ["ingest", *map(str, sample), "--no-progress", "--ray", "local", "--workers", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert f"added {len(sample)}, skipped 0 unchanged, failed 0" in result.stdout
    assert "trained codec" in result.stdout
    with semstore.connect(env["SEMSTORE_DATABASE_URL"], settings=_settings(tmp_path, env["SEMSTORE_DATABASE_URL"])) as db:
        hits = db.collection("default").search(image=sample[5], k=1)
    assert hits and hits[0].source_uri == str(sample[5])

