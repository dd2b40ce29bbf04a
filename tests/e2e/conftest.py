"""A real uvicorn server on a loopback port, with a SQLite database, the tiny model and ~30 images.

The server runs in a background thread of the test process (so the app object, e.g. its
route table, is at hand) and is shared by the whole e2e session: tests that change state
create their own collections, items or keys. The tiny open_clip model has random weights
(it is not semantic): tests check mechanics, e.g. that an image finds itself.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image, ImageDraw
from threadpoolctl import threadpool_limits

from semstore import apikeys
from semstore.config import Settings
from semstore.encoders import TINY_TEST_MODEL
from server.app import create_app
from server.serving import uvicorn_config

IMAGE_COUNT = 30
COLLECTION = "photos"


class LiveServer:
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a daemon thread."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # The production configuration (header timeout protocol), on this test's socket.
        config = uvicorn_config(app, settings, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self, timeout: float = 60.0) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()


def start_server(settings: Settings) -> LiveServer:
    return LiveServer(create_app(settings), settings).start()


def e2e_settings(root: Path, **overrides: object) -> Settings:
    """Small, fast settings: SQLite in ``root``, tiny model, 8 x 8-bit codes (8 bytes per item)."""
    values: dict[str, object] = {
        "data_dir": root / "data",
        "database_url": f"sqlite:///{root / 'semstore.db'}",
        "model": TINY_TEST_MODEL,
        "pretrained": None,
        "batch_size": 16,
        "codec_num_subvectors": 8,
        "codec_codebook_size": 256,
        "max_upload_bytes": 2 * 1024 * 1024,
        "max_images_per_request": 16,
        "max_page_size": 50,
        "rate_limit_per_minute": 0,
        "auth_failures_per_minute": 0,  # these tests send many keyless requests on purpose
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def make_image(index: int, size: int = 96) -> Image.Image:
    """A distinct, colourful picture: a gradient background with a shape on it."""
    rng = np.random.default_rng(index)
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    pixels = (start * (1 - ramp) + end * ramp).astype(np.uint8).repeat(size, axis=1)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    x0, y0 = (int(v) for v in rng.integers(4, size // 2, 2))
    x1, y1 = x0 + int(rng.integers(size // 4, size // 2)), y0 + int(rng.integers(size // 4, size // 2))
    if index % 3 == 0:
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    elif index % 3 == 1:
        draw.rectangle((x0, y0, x1, y1), fill=colour)
    else:
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=colour)
    return image


def encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return out.getvalue()


@dataclass
class Keys:
    admin: str
    reader: str


@dataclass
class Photos:
    """The shared server and what it holds."""

    server: LiveServer
    settings: Settings
    keys: Keys
    files: dict[str, bytes]
    ids: dict[str, int]
    root: Path

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, key: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=60.0, **kwargs)  # type: ignore[arg-type]

    def add_key(self, name: str, scope: str) -> str:
        return apikeys.create_api_key(self.server.app.state.semstore.database.get().sessions, name, scope)[1]


@pytest.fixture(scope="session", autouse=True)
def single_threaded_blas() -> Iterator[None]:
    """One BLAS thread: on a busy 2-core machine OpenBLAS's spinning threads make the codec's
    SVDs ~50x slower (the server runs in this process, so this covers it too; its ingest worker
    processes, spawned from it, read the same limit from the environment)."""
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Photos]:
    """The shared server with collection ``photos`` holding IMAGE_COUNT uploaded images."""
    root = tmp_path_factory.mktemp("e2e")
    (root / "allowed").mkdir()
    settings = e2e_settings(root, allowed_ingest_roots=[root / "allowed"])
    server = start_server(settings)
    sessions = server.app.state.semstore.database.get().sessions
    keys = Keys(
        admin=apikeys.create_api_key(sessions, "admin", "read-write")[1],
        reader=apikeys.create_api_key(sessions, "reader", "read")[1],
    )
    files = {
        f"img{i:02d}.{'png' if i % 2 else 'jpg'}": encode(make_image(i), "PNG" if i % 2 else "JPEG")
        for i in range(IMAGE_COUNT)
    }
    ids: dict[str, int] = {}
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {keys.admin}"}, timeout=120) as client:
            assert client.post("/v1/collections", json={"name": COLLECTION}).status_code == 201
            names = sorted(files)
            for start in range(0, len(names), settings.max_images_per_request):
                batch = names[start : start + settings.max_images_per_request]
                response = client.post(
                    f"/v1/collections/{COLLECTION}/items",
                    files=[("files", (name, files[name], "image/png" if name.endswith("png") else "image/jpeg")) for name in batch],
                    data={"metadata": json.dumps({"set": "e2e", "batch": start // settings.max_images_per_request})},
                )
                assert response.status_code == 200, response.text
                ids.update({entry["source"]: entry["id"] for entry in response.json()["files"]})
        yield Photos(server=server, settings=settings, keys=keys, files=files, ids=ids, root=root)
    finally:
        server.stop()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The response is ``status`` with the common error shape (and ``code`` if given)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "detail"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def assert_top(hits: list[dict], item_id: int) -> None:
    """``item_id`` is among the best hits (several items may share the same codes, hence ties)."""
    assert hits, "no hits"
    scores = {hit["id"]: hit["score"] for hit in hits}
    assert item_id in scores, hits
    assert scores[item_id] >= hits[0]["score"] - 1e-5, hits
