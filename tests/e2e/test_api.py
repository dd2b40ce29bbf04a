"""Every endpoint of the JSON API, over HTTP against the live server."""

from __future__ import annotations

import base64
import io
import json
import os
import zipfile

from PIL import Image

from tests.e2e.conftest import COLLECTION, IMAGE_COUNT, Photos, assert_error, assert_top, encode, make_image


def test_health_is_public_and_ready(photos: Photos) -> None:
    with photos.client() as client:
        response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["index"] == "ready"


def test_docs_and_schema_are_served(photos: Photos) -> None:
    with photos.client() as client:
        assert client.get("/docs").status_code == 200
        schema = client.get("/openapi.json").json()
    assert "/v1/collections/{name}/search" in schema["paths"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_collection_lifecycle(photos: Photos) -> None:
    with photos.client(photos.keys.admin) as client:
        created = client.post("/v1/collections", json={"name": "scratch"})
        assert created.status_code == 201, created.text
        assert created.json()["items"] == 0 and created.json()["codec_hash"] is None
        assert_error(client.post("/v1/collections", json={"name": "scratch"}), 409, "collection_exists")
        assert_error(client.post("/v1/collections", json={"name": "no spaces"}), 422, "validation_error")
        refused = client.post("/v1/collections", json={"name": "x", "model": "no-such-model"})
        assert_error(refused, 422, "model_not_allowed")
        assert "semstore-tiny-test (default)" in refused.json()["error"]["message"]  # names what is allowed
        assert_error(
            client.post("/v1/collections", json={"name": "x", "pretrained": "/etc/passwd"}), 422, "model_not_allowed"
        )
        names = [c["name"] for c in client.get("/v1/collections").json()["collections"]]
        assert {"scratch", COLLECTION} <= set(names)
        assert client.get("/v1/collections/scratch").json()["name"] == "scratch"
        assert client.delete("/v1/collections/scratch").status_code == 204
        assert_error(client.get("/v1/collections/scratch"), 404, "collection_not_found")
        assert_error(client.delete("/v1/collections/scratch"), 404, "collection_not_found")


def test_collection_stats(photos: Photos) -> None:
    with photos.client(photos.keys.reader) as client:
        stats = client.get(f"/v1/collections/{COLLECTION}").json()
    assert stats["items"] >= IMAGE_COUNT
    assert stats["bits_per_vector"] == 64
    assert stats["bytes_per_item"] == 8  # bits per vector / 8: only the codes are stored
    assert stats["codec_config"]["num_subvectors"] == 8
    assert stats["dim"] == 64 and stats["model"] == "semstore-tiny-test"
    assert stats["index_kind"] == "adc-pq" and stats["index_bytes_per_item"] >= 8 + 8  # codes + id


def test_upload_reports_each_file(photos: Photos) -> None:
    assert len(photos.ids) == IMAGE_COUNT and all(photos.ids.values())
    fresh = encode(make_image(1000), "PNG")
    with photos.client(photos.keys.admin) as client:
        response = client.post(
            f"/v1/collections/{COLLECTION}/items",
            files=[
                ("files", ("new.png", fresh, "image/png")),
                ("files", ("again.png", photos.files["img01.png"], "image/png")),
                ("files", ("bad.jpg", b"not an image at all", "image/jpeg")),
            ],
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["added"], body["skipped"], body["failed"]) == (1, 1, 1)
        statuses = {entry["source"]: entry for entry in body["files"]}
        assert statuses["new.png"]["status"] == "added" and statuses["new.png"]["id"]
        assert statuses["again.png"]["status"] == "skipped"
        assert statuses["bad.jpg"]["status"] == "failed" and statuses["bad.jpg"]["reason"] == "not an image"
        new_id = statuses["new.png"]["id"]
        item = client.get(f"/v1/collections/{COLLECTION}/items/{new_id}").json()
        assert item["source_uri"].startswith("upload://") and item["source_uri"].endswith("/new.png")
        assert client.delete(f"/v1/collections/{COLLECTION}/items/{new_id}").status_code == 204


def test_get_patch_delete_item(photos: Photos) -> None:
    fresh = encode(make_image(2000), "JPEG")
    with photos.client(photos.keys.admin) as client:
        uploaded = client.post(
            f"/v1/collections/{COLLECTION}/items",
            files={"files": ("doomed.jpg", fresh, "image/jpeg")},
            data={"metadata": json.dumps({"owner": "test", "n": 1})},
        )
        item_id = uploaded.json()["files"][0]["id"]
        base = f"/v1/collections/{COLLECTION}/items/{item_id}"

        plain = client.get(base).json()
        assert plain["metadata"] == {"owner": "test", "n": 1}
        assert plain["codes"] is None and plain["embedding"] is None
        assert (plain["width"], plain["height"]) == (96, 96)
        full = client.get(base, params={"codes": "true", "embedding": "true"}).json()
        codes = base64.b64decode(full["codes"])
        assert len(codes) == 8 and full["code_dtype"] == "uint8"
        assert len(full["embedding"]) == 64
        assert abs(sum(v * v for v in full["embedding"]) - 1.0) < 1e-4

        merged = client.patch(base, json={"metadata": {"n": 2, "tag": "x"}})
        assert merged.json()["metadata"] == {"owner": "test", "n": 2, "tag": "x"}
        replaced = client.patch(base, json={"metadata": {"only": True}, "replace": True})
        assert replaced.json()["metadata"] == {"only": True}
        assert_error(client.patch(base, json={"metadata": {"bad": "nul\u0000"}}), 422, "validation_error")

        thumb = client.get(f"{base}/thumbnail", params={"size": 64})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(thumb.content)).size) == 64
        original = client.get(f"{base}/original")
        assert original.status_code == 200 and original.content == fresh  # the uploaded bytes, unchanged
        assert original.headers["content-type"] == Image.MIME[Image.open(io.BytesIO(fresh)).format]
        assert original.headers["x-content-type-options"] == "nosniff"

        kept = list((photos.settings.data_dir / "uploads" / COLLECTION).glob("*"))
        assert any(path.read_bytes() == fresh for path in kept)
        assert client.delete(base).status_code == 204
        assert not any(path.exists() and path.read_bytes() == fresh for path in kept)
        assert_error(client.get(base), 404, "item_not_found")
        assert_error(client.get(f"{base}/thumbnail"), 404, "item_not_found")
        assert_error(client.get(f"{base}/original"), 404, "item_not_found")
        assert_error(client.delete(base), 404, "item_not_found")
        assert_error(client.patch(base, json={"metadata": {}}), 404, "item_not_found")
        assert_error(client.get(f"/v1/collections/{COLLECTION}/items/0"), 422, "validation_error")


def test_search_by_text_image_and_item(photos: Photos) -> None:
    url = f"/v1/collections/{COLLECTION}/search"
    target = photos.ids["img04.jpg"]
    with photos.client(photos.keys.reader) as client:
        text = client.post(url, json={"text": "a red circle", "k": 5})
        assert text.status_code == 200, text.text
        body = text.json()
        assert body["query"] == "text" and len(body["hits"]) == 5
        assert body["timing"]["total_ms"] >= body["timing"]["search_ms"] >= 0
        scores = [hit["score"] for hit in body["hits"]]
        assert scores == sorted(scores, reverse=True)

        by_item = client.post(url, json={"item_id": target, "k": 5}).json()
        assert by_item["query"] == "item"
        assert_top(by_item["hits"], target)

        by_image = client.post(
            f"{url}/image", files={"image": ("q.jpg", photos.files["img04.jpg"], "image/jpeg")}, data={"k": "5"}
        ).json()
        assert by_image["query"] == "image"
        assert_top(by_image["hits"], target)
        assert by_image["hits"][0]["score"] > 0.99

        filtered = client.post(url, json={"item_id": target, "k": 50, "where": {"batch": 1}}).json()
        assert filtered["hits"] and all(hit["metadata"]["batch"] == 1 for hit in filtered["hits"])
        filtered_image = client.post(
            f"{url}/image",
            files={"image": ("q.jpg", photos.files["img04.jpg"], "image/jpeg")},
            data={"k": "50", "where": json.dumps({"batch": 1}), "min_score": "-1"},
        ).json()
        assert {h["id"] for h in filtered_image["hits"]} == {h["id"] for h in filtered["hits"]}
        assert client.post(url, json={"text": "x", "where": {"set": "other"}}).json()["hits"] == []
        # operators: a range, $in, $ne, $exists, each exact against the hits' own metadata
        batches = sorted({hit["metadata"]["batch"] for hit in client.post(url, json={"text": "x", "k": 50}).json()["hits"]})
        for where, holds in (
            ({"batch": {"$gte": batches[-1]}}, lambda m: m["batch"] >= batches[-1]),
            ({"batch": {"$in": batches[:1]}}, lambda m: m["batch"] == batches[0]),
            ({"batch": {"$ne": batches[0]}, "set": {"$exists": True}}, lambda m: m["batch"] != batches[0]),
            ({"set": {"$exists": False}}, lambda m: False),
        ):
            found = client.post(url, json={"text": "x", "k": 50, "where": where}).json()["hits"]
            everything = client.post(url, json={"text": "x", "k": 50}).json()["hits"]
            assert {h["id"] for h in found} == {h["id"] for h in everything if holds(h["metadata"])}, where
        bad = assert_error(client.post(url, json={"text": "x", "where": {"batch": {"$regex": "1"}}}), 422, "validation_error")
        assert "$regex" in json.dumps(bad)
        assert_error(client.post(url, json={"text": "x", "where": {"batch": {"$gt": True}}}), 422, "validation_error")
        strict = client.post(url, json={"item_id": target, "k": 50, "min_score": 0.999}).json()
        assert target in {hit["id"] for hit in strict["hits"]}
        assert all(hit["score"] >= 0.999 for hit in strict["hits"]) and len(strict["hits"]) < len(photos.ids)
        raw = client.post(url, json={"item_id": target, "k": 5, "rerank": 0}).json()
        assert_top(raw["hits"], target)

        assert_error(client.post(url, json={"text": "x", "item_id": target}), 400, "bad_query")
        assert_error(client.post(url, json={"k": 3}), 400, "bad_query")
        assert_error(client.post(url, json={"text": "   "}), 400, "bad_query")
        assert_error(client.post(url, json={"text": "x", "k": 51}), 422, "validation_error")
        assert_error(client.post(url, json={"text": "x", "where": {'a"b': 1}}), 422, "validation_error")
        assert_error(client.post(url, json={"item_id": 10**9}), 404, "item_not_found")
        assert_error(client.post("/v1/collections/nope/search", json={"text": "x"}), 404, "collection_not_found")
        assert_error(client.post(f"{url}/image", files={"image": ("q.jpg", b"", "image/jpeg")}), 422, "bad_image")
        assert_error(
            client.post(f"{url}/image", files={"image": ("q.jpg", photos.files["img04.jpg"])}, data={"where": "{"}),
            422,
            "validation_error",
        )


def test_classify_pages_and_summary(photos: Photos) -> None:
    url = f"/v1/collections/{COLLECTION}/classify"
    labels = ["circle", "square", "triangle"]
    with photos.client(photos.keys.reader) as client:
        first = client.post(url, json={"labels": labels, "limit": 10}).json()
        second = client.post(url, json={"labels": labels, "offset": 10, "limit": 10}).json()
        assert first["labels"] == labels and sum(first["counts"].values()) == first["total"] >= IMAGE_COUNT
        assert len(first["items"]) == 10 and len(second["items"]) == 10
        assert not {i["id"] for i in first["items"]} & {i["id"] for i in second["items"]}
        assert all(item["label"] in labels for item in first["items"] + second["items"])
        assert_error(client.post(url, json={"labels": ["only"]}), 422, "validation_error")
        assert_error(client.post(url, json={"labels": ["a", "a"]}), 400, "bad_query")
        assert_error(client.post(url, json={"labels": labels, "limit": 51}), 422, "validation_error")
        assert_error(client.post(url, json={"labels": labels, "template": "{0} {x}"}), 422, "validation_error")


def test_export_import_and_codec_reuse(photos: Photos) -> None:
    with photos.client(photos.keys.admin) as client:
        exported = client.get(f"/v1/collections/{COLLECTION}/export")
        assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(exported.content))
        manifest = json.loads(archive.read("manifest.json"))
        lines = archive.read("items.jsonl").decode().splitlines()
        source_stats = client.get(f"/v1/collections/{COLLECTION}").json()
        assert manifest["items"] == len(lines) == source_stats["items"]
        assert manifest["codec_hash"] == source_stats["codec_hash"]

        files = {"archive": ("photos.zip", exported.content, "application/zip")}
        imported = client.post("/v1/collections/import", files=files, data={"name": "photos-copy"})
        assert imported.status_code == 200, imported.text
        assert imported.json()["created"] and imported.json()["added"] == len(lines)
        again = client.post("/v1/collections/import", files=files, data={"name": "photos-copy"}).json()
        assert (again["added"], again["skipped"]) == (0, len(lines))
        copy = client.get("/v1/collections/photos-copy").json()
        assert copy["items"] == source_stats["items"] and copy["codec_hash"] == source_stats["codec_hash"]
        # Same codes, so the same neighbours (by source) without re-encoding any image.
        query = {"text": "a blue square", "k": 5}
        original = client.post(f"/v1/collections/{COLLECTION}/search", json=query).json()["hits"]
        copied = client.post("/v1/collections/photos-copy/search", json=query).json()["hits"]
        assert [h["source_uri"] for h in copied] == [h["source_uri"] for h in original]

        garbage = {"archive": ("x.zip", b"PK\x03\x04 definitely not a zip", "application/zip")}
        assert_error(client.post("/v1/collections/import", files=garbage), 400, "bad_archive")

        codec = client.post("/v1/codecs", files={"file": ("codec.safetensors", archive.read("codec.safetensors"))})
        assert codec.status_code == 201 and codec.json()["content_hash"] == source_stats["codec_hash"]
        shared = client.post("/v1/collections", json={"name": "shared-codec", "codec": source_stats["codec_hash"]})
        assert shared.status_code == 201 and shared.json()["codec_hash"] == source_stats["codec_hash"]
        assert_error(client.post("/v1/codecs", files={"file": ("c.bin", b"\x00" * 64)}), 400, "bad_archive")
        assert_error(client.post("/v1/collections", json={"name": "x", "codec": "ab" * 32}), 404, "codec_not_found")
        for name in ("photos-copy", "shared-codec"):
            assert client.delete(f"/v1/collections/{name}").status_code == 204


def test_ingest_paths_confined_to_allowed_roots(photos: Photos) -> None:
    allowed, outside = photos.root / "allowed", photos.root / "outside"
    folder = allowed / "album"
    folder.mkdir(parents=True, exist_ok=True)
    outside.mkdir(exist_ok=True)
    for i in range(3):
        make_image(3000 + i).save(folder / f"p{i}.png")
    make_image(3100).save(outside / "secret.png")
    os.symlink(outside / "secret.png", folder / "link.png")
    os.symlink(outside, allowed / "escape")
    url = f"/v1/collections/{COLLECTION}/items/ingest"
    with photos.client(photos.keys.admin) as client:
        for bad in (
            "/etc/passwd",
            str(allowed / ".." / "outside" / "secret.png"),
            str(allowed / "escape" / "secret.png"),
            "relative/path.png",
            str(allowed / "missing.png"),
        ):
            assert_error(client.post(url, json={"paths": [bad]}), 400, "path_not_allowed")
        assert_error(client.post(url, json={"paths": [str(allowed) + "\u0000.png"]}), 422, "validation_error")
        response = client.post(url, json={"paths": [str(folder)], "metadata": {"via": "path"}})
        assert response.status_code == 200, response.text
        body = response.json()
        statuses = {os.path.basename(entry["source"]): entry for entry in body["files"]}
        assert body["added"] == 3 and {statuses[f"p{i}.png"]["status"] for i in range(3)} == {"added"}
        assert statuses["secret.png"]["status"] == "failed"
        assert statuses["secret.png"]["reason"] == "outside the allowed roots"
        item = client.get(f"/v1/collections/{COLLECTION}/items/{statuses['p0.png']['id']}").json()
        assert item["metadata"] == {"via": "path"} and item["source_uri"] == str(folder / "p0.png")
        thumb = client.get(f"/v1/collections/{COLLECTION}/items/{item['id']}/thumbnail")
        assert thumb.status_code == 200
        original = client.get(f"/v1/collections/{COLLECTION}/items/{item['id']}/original")
        assert original.status_code == 200 and original.headers["content-type"] == "image/png"
        assert original.content == (folder / "p0.png").read_bytes()
        # A changed source file is not served: it is no longer the ingested image.
        make_image(3200).save(folder / "p0.png")
        assert_error(client.get(f"/v1/collections/{COLLECTION}/items/{item['id']}/thumbnail"), 404, "source_unavailable")
        assert_error(client.get(f"/v1/collections/{COLLECTION}/items/{item['id']}/original"), 404, "source_unavailable")
        for entry in body["files"]:
            if entry["id"]:
                assert client.delete(f"/v1/collections/{COLLECTION}/items/{entry['id']}").status_code == 204


def test_metrics(photos: Photos) -> None:
    with photos.client(photos.keys.reader) as client:
        client.get(f"/v1/collections/{COLLECTION}")
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'semstore_http_requests_total{method="GET",route="/v1/collections/{name}",status="200"}' in text
    assert "semstore_http_request_duration_seconds_bucket" in text
    assert f'semstore_collection_items{{collection="{COLLECTION}"}}' in text
    assert f'semstore_index_vectors{{collection="{COLLECTION}"}}' in text


def test_concurrent_searches_match_sequential_ones(photos: Photos) -> None:
    """Text queries arriving together are embedded in one batch; each still gets its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    url = f"/v1/collections/{COLLECTION}/search"
    queries = [f"picture number {i}" for i in range(8)]
    with photos.client(photos.keys.reader) as client:
        sequential = [[h["id"] for h in client.post(url, json={"text": q, "k": 5}).json()["hits"]] for q in queries]

        def ask(query: str) -> list[int]:
            response = client.post(url, json={"text": query, "k": 5})
            assert response.status_code == 200, response.text
            return [h["id"] for h in response.json()["hits"]]

        with ThreadPoolExecutor(max_workers=8) as pool:
            concurrent = list(pool.map(ask, queries))
    assert concurrent == sequential


def test_exif_facts_and_filters_over_http(photos: Photos) -> None:
    from semstore import exif_fields
    from tests.exif_photos import CAMERAS, exif_photos

    album = exif_photos()[:12]
    with photos.client(photos.keys.admin) as client:
        codec = client.get(f"/v1/collections/{COLLECTION}").json()["codec_hash"]
        assert client.post("/v1/collections", json={"name": "http-album", "codec": codec}).status_code == 201
        ids: dict[str, int] = {}
        for start in range(0, len(album), photos.settings.max_images_per_request):
            batch = album[start : start + photos.settings.max_images_per_request]
            response = client.post("/v1/collections/http-album/items", files=[("files", (p.name, p.data, "image/jpeg")) for p in batch])
            assert response.status_code == 200, response.text
            ids.update({entry["source"]: entry["id"] for entry in response.json()["files"]})
        url = "/v1/collections/http-album/search"
        first = album[0]
        item = client.get(f"/v1/collections/http-album/items/{ids[first.name]}").json()
        assert item["exif"]["model"] == first.camera[1] and item["exif"]["taken_at"].startswith(first.taken.isoformat())
        where = {"exif.model": CAMERAS[1][1], "exif.location": {"$near": [40.7128, -74.0060, 50]}}
        hits = client.post(url, json={"text": "x", "k": 50, "where": where}).json()["hits"]
        expected = {
            ids[p.name] for p in album
            if p.camera == CAMERAS[1] and p.position is not None and exif_fields.distance_km(*p.position, 40.7128, -74.0060) <= 50
        }  # fmt: skip
        assert expected and {hit["id"] for hit in hits} == expected
        assert all(hit["exif"]["model"] == CAMERAS[1][1] for hit in hits)
        bad = assert_error(client.post(url, json={"text": "x", "where": {"exif.colour": "red"}}), 422, "validation_error")
        assert "unknown EXIF field" in json.dumps(bad)
        bad = assert_error(client.post(url, json={"text": "x", "where": {"exif.location": {"$near": [91, 0, 5]}}}), 422)
        assert "latitudes" in json.dumps(bad)
        assert client.delete("/v1/collections/http-album").status_code in (200, 204)
