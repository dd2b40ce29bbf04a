"""Item 3: hostile uploads against a real uvicorn server process.

Over 100 cases (truncated JPEG / PNG / GIF / WebP / BMP / TIFF at many cut points, a PNG
declaring 50,000 x 50,000 pixels, zero-dimension images, empty and random-byte files,
text renamed .jpg, PDF / EPS / SVG / FITS and other foreign formats, a body one byte
over the limit, too many multipart parts) are sent to the upload route and, as query
images, to the image-search route. Every one must get a 4xx with the JSON error shape;
no 5xx; ``/health`` is checked after every case; the server's peak RSS (VmHWM, from
/proc) may grow by at most ``RSS_GROWTH_BOUND_MIB`` over its level after start-up, and so
may that of its ingest worker process (where uploads are decoded), which must not die.
A 5,000-frame GIF is refused (more than ``semstore.ingest.images.MAX_FRAMES`` frames); a PNG /
GIF cut inside its trailing checksum or end marker is accepted (every pixel intact).
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.reliability.conftest import (
    COLLECTION,
    error_shape,
    figures,
    image_bytes,
    scaled,
    serve_photos,
    server_errors_in,
)

pytestmark = pytest.mark.reliability

ITEMS = f"/v1/collections/{COLLECTION}/items"
SEARCH_IMAGE = f"/v1/collections/{COLLECTION}/search/image"
RSS_GROWTH_BOUND_MIB = 256
RANDOM_FILES = scaled(15, 150)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")


def bmp_declaring(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def gif_declaring(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b",\x00\x00\x00\x00" + struct.pack("<HH", width, height) + b"\x00\x02\x02D\x01\x00;"


def encoded(fmt: str, size: int = 96) -> bytes:
    out = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def many_frame_gif(frames: int = 5000) -> bytes:
    images = [Image.new("P", (16, 16), 0) for _ in range(frames)]
    for index, image in enumerate(images):
        image.putpixel((index % 16, (index // 16) % 16), 1 + index % 200)
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=10, loop=0)
    return out.getvalue()


def hostile_files() -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` of every hostile single file."""
    for fmt, suffix, cuts in (
        ("JPEG", "jpg", (2, 10, 100, 300, 0.25, 0.5, 0.75, 0.9, 0.99, -2)),
        ("PNG", "png", (8, 20, 33, 60, 0.25, 0.5, 0.75, 0.9, 0.99, -40)),
        ("GIF", "gif", (6, 13, 0.5, 0.9, -20)),
        ("WEBP", "webp", (12, 30, 0.5, 0.9, -1)),
        ("BMP", "bmp", (14, 30, 54, 0.5, 0.9)),
        ("TIFF", "tif", (8, 16, 0.5, 0.9, -1)),
    ):
        data = encoded(fmt)
        for cut in cuts:
            end = cut if isinstance(cut, int) and cut > 0 else (len(data) + cut if isinstance(cut, int) else int(len(data) * cut))
            yield f"truncated-{fmt.lower()}-{end}.{suffix}", data[:end]
    yield "bomb-50000x50000.png", png_declaring(50_000, 50_000)
    yield "bomb-100000x1.png", png_declaring(100_000, 100_000)
    yield "bomb.bmp", bmp_declaring(50_000, 50_000)
    yield "bomb.gif", gif_declaring(65_535, 65_535)
    for width, height in ((0, 0), (0, 10), (10, 0)):
        yield f"zero-{width}x{height}.png", png_declaring(width, height)
        yield f"zero-{width}x{height}.bmp", bmp_declaring(width, height)
        yield f"zero-{width}x{height}.gif", gif_declaring(width, height)
    yield "empty.jpg", b""
    yield "empty.png", b""
    rng = np.random.default_rng(20261125)
    for index in range(RANDOM_FILES):
        yield f"random-{index}.jpg", rng.bytes(int(rng.integers(1, 20_000)))
    yield "random-jpeg-header.jpg", b"\xff\xd8\xff\xe0" + rng.bytes(4000)
    yield "random-png-header.png", b"\x89PNG\r\n\x1a\n" + rng.bytes(4000)
    yield "notes.jpg", b"these are my notes, not a photo\n" * 40
    yield "script.png", b"#!/bin/sh\nrm -rf /\n"
    yield "page.jpg", b"<!DOCTYPE html><html><body>hi</body></html>"
    yield "doc.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    yield "doc.jpg", b"%PDF-1.4\n" + rng.bytes(2000)
    yield "figure.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nnewpath 0 0 moveto 100 100 lineto stroke\n"
    yield "vector.svg", b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'><rect width='10' height='10'/></svg>"
    yield "vector.png", b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'></svg>"
    fits = b"SIMPLE  =                    T" + b" " * 50 + b"BITPIX  =                    8" + b" " * 49 + b"NAXIS   =                    0" + b" " * 49 + b"END" + b" " * 77
    yield "sky.fits", fits + b" " * (2880 - len(fits))
    yield "archive.jpg", b"PK\x03\x04" + rng.bytes(500)
    yield "photo.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + rng.bytes(500)
    yield "binary.png", b"\x7fELF\x02\x01\x01" + rng.bytes(1000)
    yield "nul.jpg", bytes(5000)


def test_hostile_uploads_get_4xx_and_the_server_stays_healthy(shipped_codec, tiny_encoder, tmp_path: Path) -> None:  # noqa: ANN001
    codec, _ = shipped_codec
    served = serve_photos(f"sqlite:///{tmp_path / 'hostile.db'}", tmp_path, codec, tiny_encoder)
    statuses: dict[int, int] = {}
    cases = 0
    try:
        with served.client(served.admin) as admin, served.client() as anonymous:
            assert admin.post(ITEMS, files={"files": ("ok.png", image_bytes(1), "image/png")}).status_code == 200
            start_kib = served.server.memory_kib()
            # Uploads decode in the ingest worker process (settings.ingest_processes): its peak counts too.
            workers_start = served.server.worker_memory_kib()
            assert len(workers_start) == served.settings.ingest_processes

            def expect_4xx(name: str, response: httpx.Response, health: bool = True) -> None:
                nonlocal cases
                cases += 1
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:300])
                assert error_shape(response) is not None, (name, response.text[:300])
                if health:
                    assert anonymous.get("/health").status_code == 200, f"/health failed after {name}"

            for name, data in hostile_files():
                expect_4xx(name, admin.post(ITEMS, files={"files": (name, data, "application/octet-stream")}))
                expect_4xx(f"search:{name}", admin.post(SEARCH_IMAGE, files={"image": (name, data)}), health=False)

            limit = served.settings.max_upload_bytes
            boundary = b"--b0undary"
            head = boundary + b'\r\nContent-Disposition: form-data; name="files"; filename="big.jpg"\r\n\r\n'
            tail = b"\r\n" + boundary + b"--\r\n"
            exact = head + b"\xff" * (limit + 1 - len(head) - len(tail)) + tail
            assert len(exact) == limit + 1
            headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
            expect_4xx("one byte over the limit", admin.post(ITEMS, content=exact, headers=headers))

            def streamed() -> Iterator[bytes]:  # the same body without Content-Length
                yield exact

            expect_4xx("one byte over, streamed", admin.post(ITEMS, content=streamed(), headers=headers))
            too_many = served.settings.max_images_per_request + 1
            tiny = image_bytes(7, size=16)
            expect_4xx("too many images", admin.post(ITEMS, files=[("files", (f"{i}.png", tiny)) for i in range(too_many)]))
            expect_4xx("2000 parts", admin.post(ITEMS, files=[("files", (f"{i}.png", b"x")) for i in range(2000)]))
            expect_4xx("2000 form fields", admin.post(ITEMS, data={f"f{i}": "x" for i in range(2000)}, files={"files": ("a.png", tiny)}))
            expect_4xx("no parts", admin.post(ITEMS, content=boundary + b"--\r\n", headers=headers))
            expect_4xx("unterminated multipart", admin.post(ITEMS, content=head + b"abc", headers=headers))

            trailer_cuts = {"png-cut-in-trailer.png": encoded("PNG")[:-19], "gif-cut-in-trailer.gif": encoded("GIF")[:-1]}
            for name, data in trailer_cuts.items():
                kept = admin.post(ITEMS, files={"files": (name, data, "application/octet-stream")})
                assert kept.status_code == 200 and kept.json()["added"] == 1, (name, kept.text[:300])

            frames = many_frame_gif()
            started = time.perf_counter()
            gif = admin.post(ITEMS, files={"files": ("frames.gif", frames, "image/gif")})
            gif_seconds = time.perf_counter() - started
            expect_4xx("5,000-frame GIF", gif)
            assert "5000 frames" in gif.text, gif.text[:300]
            expect_4xx("5,000-frame GIF as query", admin.post(SEARCH_IMAGE, files={"image": ("frames.gif", frames, "image/gif")}))
            assert anonymous.get("/health").status_code == 200
            end_kib = served.server.memory_kib()
            workers_end = served.server.worker_memory_kib()
            assert set(workers_end) == set(workers_start), "an ingest worker was replaced (it died)"
            count = admin.get(f"/v1/collections/{COLLECTION}").json()["items"]
            assert count == 1 + len(trailer_cuts)  # ok.png and the trailer cuts: no hostile file was stored
    finally:
        log = served.server.stop()
    growth_mib = (end_kib["VmHWM"] - start_kib["VmHWM"]) / 1024
    worker_growth_mib = max(((workers_end[pid]["VmHWM"] - workers_start[pid]["VmHWM"]) / 1024 for pid in workers_end), default=0.0)
    figures(
        "hostile-uploads",
        cases=cases,
        status_counts=dict(sorted(statuses.items())),
        responses_5xx=sum(n for s, n in statuses.items() if s >= 500),
        server_errors_logged=len(server_errors_in(log)),
        rss_after_start_mib=round(start_kib["VmHWM"] / 1024),
        peak_rss_mib=round(end_kib["VmHWM"] / 1024),
        peak_growth_mib=round(growth_mib, 1),
        worker_peak_rss_mib=[round(kib["VmHWM"] / 1024) for kib in workers_end.values()],
        worker_peak_growth_mib=round(worker_growth_mib, 1),
        bound_mib=RSS_GROWTH_BOUND_MIB,
        gif_5000_frames_seconds=round(gif_seconds, 2),
    )
    assert cases >= 100
    assert not server_errors_in(log), log[-4000:]
    assert growth_mib <= RSS_GROWTH_BOUND_MIB
    assert worker_growth_mib <= RSS_GROWTH_BOUND_MIB
