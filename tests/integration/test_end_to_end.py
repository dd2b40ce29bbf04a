"""End to end through the Python API: generated images -> tiny open_clip model -> codes in SQLite
and PostgreSQL -> search by text and image, dedup on re-ingest, bad files reported.

The tiny model has random weights (not semantic), so the checks are about mechanics:
an image must find itself, codes must be the only stored representation, etc.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from sqlalchemy import inspect, text

import semstore
from semstore.config import Settings
from semstore.encoders import TINY_TEST_MODEL

SHAPES = ("ellipse", "rectangle", "triangle", "cross")


def draw_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` distinct images of coloured shapes on coloured backgrounds."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        background = tuple(int(v) for v in rng.integers(0, 256, 3))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        image = Image.new("RGB", (64, 64), background)
        draw = ImageDraw.Draw(image)
        x0, y0 = (int(v) for v in rng.integers(0, 28, 2))
        x1, y1 = x0 + int(rng.integers(16, 36)), y0 + int(rng.integers(16, 36))
        shape = SHAPES[i % len(SHAPES)]
        if shape == "ellipse":
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape == "rectangle":
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif shape == "triangle":
            draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=5)
            draw.line((x0, y1, x1, y0), fill=colour, width=5)
        sub = folder / f"group{i % 3}"
        sub.mkdir(exist_ok=True)
        path = sub / f"img{i:03d}.{'png' if i % 2 else 'jpg'}"
        image.save(path, quality=95)
        paths.append(path)
    return paths


def tiny_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for these tests: the tiny model, 8 x 8-bit codes, data under ``tmp_path``."""
    values: dict[str, object] = {
        "data_dir": tmp_path / "data", "model": TINY_TEST_MODEL, "pretrained": None,
        "batch_size": 16, "codec_num_subvectors": 8, "codec_codebook_size": 256,
    }  # fmt: skip
    return Settings(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path)


def test_ingest_search_dedup_and_bad_files(db_url: str, settings: Settings, tmp_path: Path) -> None:
    images = draw_images(tmp_path / "photos", 200)
    (tmp_path / "photos" / "corrupt.jpg").write_bytes(images[0].read_bytes()[:200])
    (tmp_path / "photos" / "empty.png").write_bytes(b"")

    db = semstore.connect(db_url, settings=settings)
    photos = db.create_collection("photos")
    report = photos.add([tmp_path / "photos"], metadata={"source": "generated"}, progress=False)
    assert report.added == 200
    assert report.codec_trained
    assert sorted(Path(f.source).name for f in report.failed) == ["corrupt.jpg", "empty.png"]
    assert all(f.reason for f in report.failed)

    # every image finds itself first, by example
    for path in images[:: 20]:
        hits = photos.search(image=path, k=5)
        assert hits[0].source_uri == str(path.resolve())
        assert hits[0].metadata == {"source": "generated"}
        assert hits[0].score >= hits[-1].score
    # text queries run through the same index
    text_hits = photos.search("a red circle", k=7)
    assert len(text_hits) == 7 and len({h.id for h in text_hits}) == 7
    # metadata filter and min_score
    assert photos.search("a red circle", k=5, where={"source": "elsewhere"}) == []
    assert all(h.score >= 0.5 for h in photos.search(image=images[3], k=50, min_score=0.5))
    # more like this, from the stored codes alone
    like = photos.search(item=text_hits[0].id, k=3)
    assert like[0].id == text_hits[0].id

    # re-ingest adds nothing; a new image is added with the existing codec
    again = photos.add([tmp_path / "photos"], progress=False)
    assert (again.added, again.skipped, again.codec_trained) == (0, 200, False)
    extra = draw_images(tmp_path / "more", 1, seed=99)
    assert photos.add(extra, progress=False).added == 1

    stats = photos.stats()
    assert stats.items == 201
    assert stats.bytes_per_item == stats.bits_per_vector / 8 == 8
    assert stats.bits_per_pixel == pytest.approx(stats.bits_per_vector / (64 * 64))

    # zero-shot classification over codes gives every item one of the labels
    labels = photos.classify(["red", "green", "blue"])
    assert len(labels) == 201 and sum(labels.counts().values()) == 201

    # a fresh connection (new process in real life) sees the same data through a reloaded index
    db.close()
    reopened = semstore.connect(db_url, settings=settings).collection("photos")
    assert reopened.search(image=images[5], k=1)[0].source_uri == str(images[5].resolve())


def test_no_float_columns_and_codes_only(db_url: str, settings: Settings, tmp_path: Path) -> None:
    images = draw_images(tmp_path / "photos", 20)
    db = semstore.connect(db_url, settings=settings)
    collection = db.create_collection("small")
    collection.add(images, progress=False)
    inspector = inspect(db.engine)
    for table in inspector.get_table_names():
        for column in inspector.get_columns(table):
            kind = str(column["type"]).upper()
            assert not any(word in kind for word in ("FLOAT", "REAL", "DOUBLE", "NUMERIC", "ARRAY", "VECTOR")), (
                f"{table}.{column['name']} is {kind}"
            )
    codec = collection.codec
    assert codec is not None
    with db.engine.connect() as connection:
        lengths = connection.execute(text("SELECT length(codes) FROM items")).scalars().all()
    assert lengths and set(lengths) == {int(codec.bits_per_vector // 8)}


def test_shared_codec_makes_collections_comparable(tmp_path: Path, settings: Settings) -> None:
    images = draw_images(tmp_path / "photos", 40)
    db = semstore.connect(f"sqlite:///{tmp_path / 'a.db'}", settings=settings)
    first = db.create_collection("first")
    first.add(images[:30], progress=False)
    codec_file = first.codec.save(tmp_path / "codec.safetensors")  # type: ignore[union-attr]
    second = db.create_collection("second", codec=codec_file)
    report = second.add(images[30:], progress=False)
    assert report.added == 10 and not report.codec_trained
    assert second.codec.content_hash == first.codec.content_hash  # type: ignore[union-attr]
    np.testing.assert_array_equal(second.codes(second.search(image=images[35], k=1)[0].id), first.codec.encode(  # type: ignore[union-attr]
        first.embed_query(image=images[35]))[0])


def test_too_few_images_to_train_is_a_clear_error(tmp_path: Path, settings: Settings) -> None:
    images = draw_images(tmp_path / "photos", 1)
    db = semstore.connect(f"sqlite:///{tmp_path / 'a.db'}", settings=settings)
    with pytest.raises(semstore.IngestError, match="at least 2"):
        db.create_collection("one").add(images, progress=False)


def test_codec_beam_setting_reaches_new_codecs(tmp_path: Path, settings: Settings) -> None:
    fast = settings.model_copy(update={"codec_beam_size": 4})
    db = semstore.connect(f"sqlite:///{tmp_path / 'beam.db'}", settings=fast)
    assert db.new_codec(32).config.beam_size == 4
    assert semstore.connect(f"sqlite:///{tmp_path / 'default.db'}", settings=settings).new_codec(32).config.beam_size == 12
    with pytest.raises(ValueError):
        Settings(codec_beam_size=0)


def test_the_neural_decoder_setting_trains_one_at_bootstrap(db_url: str, tmp_path: Path) -> None:
    """SEMSTORE_CODEC_NEURAL_DECODER: the bootstrap trains a decoder with the codec and keeps
    it only if it won on held-out vectors; the stored codec carries that choice to a new
    connection, and search scores are cosines with ``refined_decode`` either way."""
    settings = tiny_settings(tmp_path, codec_neural_decoder=True)
    images = draw_images(tmp_path / "photos", 120)
    db = semstore.connect(db_url, settings=settings)
    photos = db.create_collection("photos")
    report = photos.add(images, progress=False)
    assert report.added == 120 and report.codec_trained
    codec = photos.codec
    assert codec is not None and codec.neural_report is not None  # the bootstrap trained one
    # kept only when it beat the linear decoder on held-out vectors
    assert (codec.neural_decoder is not None) == (codec.neural_report.best_epoch > 0)
    assert photos.stats().neural_decoder is (codec.neural_decoder is not None)

    hits = photos.search(image=images[7], k=5)
    assert hits[0].source_uri == str(images[7].resolve())
    # the scores are cosines with the neural reconstructions of the stored codes
    query = photos.embed_query(image=images[7])
    refined = codec.refined_decode(photos.codes(hits[0].id)[None, :])[0]
    unit = query[0] / np.linalg.norm(query[0])
    assert hits[0].score == pytest.approx(float(refined @ unit), abs=1e-5)
    assert len(photos.classify(["red", "blue"])) == 120

    db.close()
    reopened = semstore.connect(db_url, settings=settings).collection("photos")
    again = reopened.codec
    assert again is not None and again.content_hash == codec.content_hash
    if codec.neural_decoder is not None:
        assert again.neural_decoder is not None
        assert again.neural_decoder.content_hash == codec.neural_decoder.content_hash
    assert [h.id for h in reopened.search(image=images[7], k=5)] == [h.id for h in hits]
