"""Upload limits and hostile files: 413 / 4xx with the error shape, and the server stays healthy."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import COLLECTION, Photos, assert_error, encode, make_image

ITEMS = f"/v1/collections/{COLLECTION}/items"


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def admin(photos: Photos) -> Iterator[httpx.Client]:
    with photos.client(photos.keys.admin) as client:
        yield client
    with photos.client() as client:
        assert client.get("/health").status_code == 200  # still healthy after every test here


def test_oversize_body_is_413(photos: Photos, admin: httpx.Client) -> None:
    limit = photos.settings.max_upload_bytes
    big = b"\xff\xd8\xff" + bytes(limit + 1024)
    declared = admin.post(ITEMS, files={"files": ("big.jpg", big, "image/jpeg")})
    error = assert_error(declared, 413, "payload_too_large")
    assert error["detail"] == {"max_bytes": limit}

    def stream() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        boundary = b"--xyz\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.jpg\"\r\n\r\n"
        yield boundary
        for _ in range(limit // 65536 + 2):
            yield bytes(65536)
        yield b"\r\n--xyz--\r\n"

    streamed = admin.post(ITEMS, content=stream(), headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert_error(streamed, 413, "payload_too_large")
    assert_error(admin.post(f"/v1/collections/{COLLECTION}/search", content=stream()), 413, "payload_too_large")


def test_too_many_images_in_one_request(photos: Photos, admin: httpx.Client) -> None:
    count = photos.settings.max_images_per_request + 1
    files = [("files", (f"t{i}.png", encode(make_image(5000 + i, 16), "PNG"), "image/png")) for i in range(count)]
    error = assert_error(admin.post(ITEMS, files=files), 413, "too_many_images")
    assert error["detail"] == {"max_images": photos.settings.max_images_per_request}


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("truncated.png", lambda: encode(make_image(6000), "PNG")[:300], "truncated"),
        ("notes.jpg", lambda: b"these are my notes, not a photo\n" * 20, "not an image"),
        ("empty.jpg", lambda: b"", "empty file"),
        ("bomb.png", lambda: _png_declaring(50_000, 50_000), "image too large"),
        ("vector.png", lambda: b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "unsupported format"),
    ],
)
def test_malformed_upload_is_4xx(photos: Photos, admin: httpx.Client, name: str, make, reason: str) -> None:
    error = assert_error(admin.post(ITEMS, files={"files": (name, make(), "image/png")}), 422, "bad_images")
    (entry,) = error["detail"]["files"]
    assert entry["status"] == "failed" and reason in entry["reason"], entry


def test_bad_image_in_a_batch_rejects_only_that_image(photos: Photos, admin: httpx.Client) -> None:
    good = [encode(make_image(7000 + i), "JPEG") for i in range(2)]
    files = [
        ("files", ("good0.jpg", good[0], "image/jpeg")),
        ("files", ("bomb.png", _png_declaring(50_000, 50_000), "image/png")),
        ("files", ("good1.jpg", good[1], "image/jpeg")),
        ("files", ("truncated.jpg", good[0][:200], "image/jpeg")),
    ]
    response = admin.post(ITEMS, files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["added"], body["failed"]) == (2, 2)
    by_name = {entry["source"]: entry for entry in body["files"]}
    assert by_name["good0.jpg"]["status"] == by_name["good1.jpg"]["status"] == "added"
    assert by_name["bomb.png"]["reason"].startswith("image too large: 50000x50000")
    assert by_name["truncated.jpg"]["status"] == "failed"
    for name in ("good0.jpg", "good1.jpg"):
        assert admin.delete(f"{ITEMS}/{by_name[name]['id']}").status_code == 204


def test_malformed_requests_use_the_error_shape(photos: Photos, admin: httpx.Client) -> None:
    assert_error(admin.post(ITEMS), 422, "validation_error")  # no files at all
    twice_empty = admin.post(ITEMS, files=[("files", ("a.png", b"")), ("files", ("a.png", b""))])
    assert [entry["status"] for entry in assert_error(twice_empty, 422, "bad_images")["detail"]["files"]] == ["failed"] * 2
    assert_error(admin.post(ITEMS, content=b"--nope", headers={"Content-Type": "multipart/form-data"}), 400)
    assert_error(
        admin.post(ITEMS, files={"files": ("a.png", encode(make_image(1), "PNG"))}, data={"metadata": "[1, 2]"}),
        422,
        "validation_error",
    )
    search = f"/v1/collections/{COLLECTION}/search"
    assert_error(admin.post(search, content=b"{not json", headers={"Content-Type": "application/json"}), 422, "validation_error")
    assert_error(admin.post(search, content=b'{"text": "x", "min_score": NaN}', headers={"Content-Type": "application/json"}), 422)
    assert_error(admin.post(search, json={"text": "x", "unknown": 1}), 422, "validation_error")
    assert_error(admin.post(search, files={"image": ("q.png", _png_declaring(50_000, 50_000))}), 422)
    assert_error(
        admin.post(f"{search}/image", files={"image": ("q.png", _png_declaring(50_000, 50_000))}), 422, "bad_image"
    )
    assert_error(admin.put(ITEMS), 405, "method_not_allowed")
    assert_error(admin.get("/v1/collections/bad name"), 422, "validation_error")
