"""Shared pieces of the reliability matrix: scale, a codec trained once, images, a server subprocess.

Every test here is marked ``reliability`` and runs a bounded version by default (CI);
``SEMSTORE_RELIABILITY_LONG=1`` scales the counts up (kills, cases, seconds, examples)
to the long run recorded in ``RESULTS.md``. Tests print their figures (run with ``-s``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from threadpoolctl import threadpool_limits

from semstore.codec import PQVAECodec
from semstore.config import Settings
from semstore.encoders import TINY_TEST_MODEL, Encoder, OpenClipEncoder
from tests.e2e.conftest import encode, make_image

REPO = Path(__file__).resolve().parents[2]
LONG = os.environ.get("SEMSTORE_RELIABILITY_LONG") == "1"

#: Code shape of every collection here: 8 codes of 8 bits (8 bytes per item).
NUM_SUBVECTORS = 8
CODEBOOK_SIZE = 256
COLLECTION = "photos"


def scaled(ci: int, long: int) -> int:
    """``ci`` in the bounded (default) run, ``long`` with ``SEMSTORE_RELIABILITY_LONG=1``."""
    return long if LONG else ci


def figures(test: str, **values: object) -> None:
    """Print a test's measured figures on one line (``pytest -s`` shows them; RESULTS.md quotes them)."""
    print(f"\n[reliability] {test}: " + ", ".join(f"{key}={value}" for key, value in values.items()), flush=True)


def image_bytes(index: int, size: int = 40, fmt: str = "PNG") -> bytes:
    """A distinct small image (see ``tests.e2e.conftest.make_image``)."""
    return encode(make_image(index, size), fmt)


def write_images(folder: Path, count: int, *, start: int = 0) -> list[Path]:
    """``count`` distinct PNG files ``img00000.png``... in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        path = folder / f"img{index:05d}.png"
        path.write_bytes(image_bytes(index))
        paths.append(path)
    return paths


def settings_for(url: str, data_dir: Path, **overrides: object) -> Settings:
    """Small settings: the tiny model, 8 x 8-bit codes, one torch thread."""
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": url,
        "model": TINY_TEST_MODEL,
        "pretrained": None,
        "threads": 1,
        "batch_size": 8,
        "codec_num_subvectors": NUM_SUBVECTORS,
        "codec_codebook_size": CODEBOOK_SIZE,
        "codec_bootstrap_size": 32,
        "max_upload_bytes": 2 * 1024 * 1024,
        "max_images_per_request": 16,
        "rate_limit_per_minute": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread() -> Iterator[None]:
    """One BLAS thread (a busy 2-core machine; see tests/e2e/conftest.py)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def tiny_encoder() -> Encoder:
    """The tiny random-weight open_clip encoder (built once per session)."""
    return OpenClipEncoder(TINY_TEST_MODEL, None, threads=1, batch_size=32)


@pytest.fixture(scope="session")
def shipped_codec(tiny_encoder: Encoder, tmp_path_factory: pytest.TempPathFactory) -> tuple[PQVAECodec, Path]:
    """A codec trained once on tiny-model embeddings of 256 generated images, and its file."""
    from semstore.ingest.images import open_image

    images = [open_image(image_bytes(100_000 + i), max_pixels=10**6) for i in range(256)]
    embeddings = tiny_encoder.encode_images(images)
    codec = PQVAECodec(dim=embeddings.shape[1], num_subvectors=NUM_SUBVECTORS, codebook_size=CODEBOOK_SIZE)
    codec.fit(embeddings, seed=0, progress=False)
    path = tmp_path_factory.mktemp("codec") / "codec.safetensors"
    codec.save(path)
    return codec, path


def encoder_factory(encoder: Encoder):  # noqa: ANN201 - a Database encoder factory
    """A ``Database`` encoder factory that hands out the session's tiny encoder."""
    return lambda _model, _pretrained: encoder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(settings: Settings) -> dict[str, str]:
    """``SEMSTORE_*`` variables that reproduce ``settings`` in a server subprocess."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SEMSTORE_")}
    env.update(settings.as_environment())
    env["PYTHONPATH"] = str(REPO)
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    return env


@dataclass
class ServerProcess:
    """``python -m server`` (the production entry point) in its own process (so its RSS is its own)."""

    settings: Settings
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ServerProcess:
        env = server_env(self.settings) | {"SEMSTORE_HOST": "127.0.0.1", "SEMSTORE_PORT": str(self.port)}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server"], cwd=REPO, env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: {self.log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not become healthy: {self.log.read_text()[-4000:]}")

    def memory_kib(self) -> dict[str, int]:
        """The server process's ``VmRSS`` and ``VmHWM`` (peak RSS) in KiB, from /proc."""
        assert self.process is not None
        return _memory_kib(self.process.pid)

    def ingest_workers(self) -> list[int]:
        """The pids of the server's ingest worker processes (``settings.ingest_processes``): its
        children started by multiprocessing, but for its resource tracker."""
        assert self.process is not None
        children = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            children += [int(pid) for pid in (task / "children").read_text().split()]
        workers = []
        for pid in children:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except FileNotFoundError:
                continue
            if b"spawn_main" in command and b"resource_tracker" not in command:
                workers.append(pid)
        return sorted(workers)

    def worker_memory_kib(self) -> dict[int, dict[str, int]]:
        """``memory_kib`` of each ingest worker process, by pid."""
        return {pid: _memory_kib(pid) for pid in self.ingest_workers()}

    def stop(self) -> str:
        """Stop the server; returns its log (stderr + stdout)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.log.read_text(errors="replace")


def _memory_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def server_errors_in(log: str) -> list[str]:
    """Lines of a server log that report an unexpected (500) error."""
    return [line for line in log.splitlines() if "unexpected error" in line or "Traceback" in line]


def error_shape(response: httpx.Response) -> Mapping[str, object] | None:
    """The ``error`` object when ``response`` has the common JSON error shape, else None."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return None
    error = body["error"]
    if set(error) != {"code", "message", "detail"} or not isinstance(error["message"], str) or not error["message"]:
        return None
    return error


@dataclass
class Served:
    """A server subprocess over a database holding collection ``photos`` (shipped codec) and two keys."""

    server: ServerProcess
    settings: Settings
    admin: str
    reader: str

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, key: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120.0, **kwargs)  # type: ignore[arg-type]


def serve_photos(url: str, root: Path, codec: PQVAECodec, encoder: Encoder, **overrides: object) -> Served:
    """Migrate ``url``, create ``photos`` with ``codec`` and an admin and a reader key, start a server on it."""
    import semstore
    from semstore import apikeys

    settings = settings_for(url, root / "data", **overrides)
    database = semstore.connect(url, settings=settings, encoder_factory=encoder_factory(encoder))
    try:
        database.create_collection(COLLECTION, codec=codec)
        admin = apikeys.create_api_key(database.sessions, "admin", "read-write")[1]
        reader = apikeys.create_api_key(database.sessions, "reader", "read")[1]
    finally:
        database.close()
    server = ServerProcess(settings, root / "server.log").start()
    return Served(server, settings, admin, reader)
