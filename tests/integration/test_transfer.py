"""Export / import of a collection between databases (SQLite <-> PostgreSQL) without re-encoding."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from threadpoolctl import threadpool_limits

import semstore
from semstore import storage, transfer
from semstore.codec import PQVAECodec
from semstore.config import Settings
from semstore.encoders import TINY_TEST_MODEL


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_export_from_sqlite_import_into_another_database(db_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", model=TINY_TEST_MODEL, pretrained=None)
    source = semstore.connect(f"sqlite:///{tmp_path / 'source.db'}", settings=settings)
    codec = PQVAECodec(dim=64, num_subvectors=4, codebook_size=16).fit(
        np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), progress=False
    )
    photos = source.create_collection("photos", codec=codec)
    report = photos.add_images([(f"p{i}.png", _png(i)) for i in range(10)], metadata={"k": 1})
    assert report.added == 10
    photos.update_metadata(report.added_items[0][1], {"first": True})

    archive = tmp_path / "photos.zip"
    summary = transfer.export_collection(source, "photos", archive)
    assert summary.items == 10 and summary.codec_hash == codec.content_hash

    target = semstore.connect(db_url, settings=settings)
    imported = transfer.import_collection(target, archive, name="copy")
    assert (imported.created, imported.added, imported.skipped) == (True, 10, 0)
    again = transfer.import_collection(target, archive, name="copy")
    assert (again.created, again.added, again.skipped) == (False, 0, 10)

    copy = target.collection("copy")
    assert copy.codec.content_hash == codec.content_hash
    original = {photos.get(i).source_uri: (photos.codes(i).tolist(), photos.get(i).metadata) for _, i in report.added_items}
    hits = copy.search(text="anything", k=10)
    assert {h.source_uri for h in hits} == set(original)
    for hit in hits:
        assert (copy.codes(hit.id).tolist(), hit.metadata) == original[hit.source_uri]
    query = photos.encoder.encode_texts(["anything"])
    assert [h.source_uri for h in copy.search_vector(query, k=5)] == [h.source_uri for h in photos.search_vector(query, k=5)]
    source.close()
    target.close()


def _rewrite(archive: Path, tmp_path: Path, **members: bytes) -> Path:
    out = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            if name not in members:
                dst.writestr(name, src.read(name))
        for name, data in members.items():
            if data is not None:
                dst.writestr(name, data)
    return out


def test_malformed_archives_are_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", model=TINY_TEST_MODEL, pretrained=None)
    db = semstore.connect(f"sqlite:///{tmp_path / 'db.sqlite'}", settings=settings)
    codec = PQVAECodec(dim=64, num_subvectors=4, codebook_size=16).fit(
        np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32), progress=False
    )
    db.create_collection("c", codec=codec).add_images([(f"p{i}.png", _png(i)) for i in range(3)])
    good = tmp_path / "good.zip"
    transfer.export_collection(db, "c", good)
    lines = (zipfile.ZipFile(good).read("items.jsonl")).decode().splitlines()
    entry = json.loads(lines[0])

    cases = {
        "not a zip": None,
        "manifest": {"manifest.json": b"{}"},
        "codec": {"codec.safetensors": b"garbage"},
        "short codes": {"items.jsonl": json.dumps({**entry, "codes": "AAA="}).encode()},
        "not base64": {"items.jsonl": json.dumps({**entry, "codes": "!!"}).encode()},
        "nan metadata": {"items.jsonl": json.dumps({**entry, "metadata": {"x": float("nan")}}).encode()},
        "bad json": {"items.jsonl": b"{nope"},
        "non-hex hash": {"items.jsonl": json.dumps({**entry, "content_hash": "z" * 32}).encode()},
        "40-hex hash": {"items.jsonl": json.dumps({**entry, "content_hash": "a" * 40}).encode()},
        "number hash": {"items.jsonl": json.dumps({**entry, "content_hash": 12}).encode()},
    }
    for label, members in cases.items():
        path = tmp_path / "junk.zip" if members is None else _rewrite(good, tmp_path, **members)
        if members is None:
            path.write_bytes(b"junk")
        with pytest.raises(transfer.TransferError):
            transfer.import_collection(db, path, name=f"t-{label.replace(' ', '-')}")
    assert sorted(c.name for c in db.collections()) == ["c"]  # failed imports left nothing behind
    other = PQVAECodec(dim=64, num_subvectors=4, codebook_size=16).fit(
        np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32), progress=False
    )
    db.create_collection("other", codec=other)
    with pytest.raises(transfer.TransferError, match="codec"):
        transfer.import_collection(db, good, name="other")
    db.close()


def test_archives_with_full_sha256_hashes_import_with_the_first_128_bits(tmp_path: Path) -> None:
    """Exports written before schema 0002 carry 64-hex content hashes; they still import and dedupe."""
    settings = Settings(data_dir=tmp_path / "data", model=TINY_TEST_MODEL, pretrained=None)
    db = semstore.connect(f"sqlite:///{tmp_path / 'db.sqlite'}", settings=settings)
    codec = PQVAECodec(dim=64, num_subvectors=4, codebook_size=16).fit(
        np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32), progress=False
    )
    images = [_png(i) for i in range(3)]
    photos = db.create_collection("c", codec=codec)
    photos.add_images([(f"p{i}.png", data) for i, data in enumerate(images)])
    archive = tmp_path / "new.zip"
    transfer.export_collection(db, "c", archive)
    full = {hashlib.sha256(data).hexdigest()[:32]: hashlib.sha256(data).hexdigest() for data in images}
    entries = [json.loads(line) for line in zipfile.ZipFile(archive).read("items.jsonl").decode().splitlines()]
    assert sorted(e["content_hash"] for e in entries) == sorted(full)
    old_lines = [json.dumps({**e, "content_hash": full[e["content_hash"]].upper() if i == 0 else full[e["content_hash"]]})
                 for i, e in enumerate(entries)]  # fmt: skip
    manifest = json.loads(zipfile.ZipFile(archive).read("manifest.json"))
    assert manifest["version"] == transfer.FORMAT_VERSION == 2  # 32-hex hashes: not for an older reader
    old_manifest = json.dumps({**manifest, "version": 1}).encode()
    old = _rewrite(archive, tmp_path, **{"items.jsonl": "\n".join(old_lines).encode(), "manifest.json": old_manifest})

    imported = transfer.import_collection(db, old, name="copy")
    assert (imported.added, imported.skipped) == (3, 0)
    assert _stored_hashes(db, "copy") == {e["source_uri"]: e["content_hash"] for e in entries}
    assert transfer.import_collection(db, old, name="c").skipped == 3  # same files, 64-hex or 32-hex
    future = _rewrite(archive, tmp_path, **{"manifest.json": json.dumps({**manifest, "version": 3}).encode()})
    with pytest.raises(transfer.TransferError, match="unsupported export version 3"):
        transfer.import_collection(db, future, name="later")
    db.close()


def _stored_hashes(db: semstore.Database, name: str) -> dict[str, str]:
    """Source URI -> stored content hash of every item of collection ``name``."""
    collection_id = db.collection(name).id
    with db.sessions() as session:
        ids = storage.item_ids(session, collection_id=collection_id).tolist()
        return {item.source_uri: item.content_hash for item in storage.get_items(session, collection_id=collection_id, ids=ids)}
