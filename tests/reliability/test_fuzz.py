"""Item 6: fuzzing. Schemathesis (stateful phase included) over the whole API with and without
credentials, and a hypothesis fuzz target over image decoding + encoding.

The schemathesis runs are bounded (examples per operation, fixed seed) and require 0
server errors; without credentials every protected operation must answer 401. The
hypothesis target feeds random bytes and mutated JPEG / PNG / GIF / WebP / BMP / TIFF files to
``semstore.ingest.images.open_image`` and the tiny open_clip encoder: each input must
give a ``BadImageError`` or an RGB image within the pixel limit whose embedding is finite,
within the per-example deadline (no crash, no hang).
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

import semstore
from semstore import apikeys
from semstore.ingest.images import BadImageError, open_image
from tests.e2e.conftest import LiveServer, e2e_settings, start_server
from tests.e2e.test_schemathesis import CONFIG  # the same fixed path parameters
from tests.reliability.conftest import COLLECTION, LONG, encoder_factory, figures, image_bytes, scaled

pytestmark = pytest.mark.reliability

MAX_EXAMPLES = scaled(10, 50)
FUZZ_EXAMPLES = scaled(150, 5000)
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, shipped_codec, tiny_encoder) -> Iterator[tuple[LiveServer, str]]:  # noqa: ANN001
    root = tmp_path_factory.mktemp("fuzz")
    (root / "allowed").mkdir()
    settings = e2e_settings(root, allowed_ingest_roots=[root / "allowed"], codec_num_subvectors=8)
    database = semstore.connect(settings.resolved_database_url(), settings=settings, encoder_factory=encoder_factory(tiny_encoder))
    database.create_collection(COLLECTION, codec=shipped_codec[0]).add_images([(f"f{i}.png", image_bytes(8000 + i)) for i in range(12)])
    key = apikeys.create_api_key(database.sessions, "fuzzer", "read-write")[1]
    database.close()
    server = start_server(settings)
    try:
        yield server, key
    finally:
        server.stop()


def _schemathesis(server: LiveServer, workdir: Path, phases: str, checks: str, headers: list[str]) -> str:
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config),
        "run", f"{server.url}/openapi.json", "--checks", checks, "--phases", phases,
        "--max-examples", str(MAX_EXAMPLES), "--seed", "20261125", "--no-shrink",
        "--request-timeout", "60", "--workers", "1", *headers,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=workdir)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    return result.stdout


def _summary(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if re.search(r"Scenarios:|API Links:|\d+ generated", line)]
    return " | ".join(lines)


def test_schemathesis_stateful_with_credentials(target, tmp_path: Path) -> None:  # noqa: ANN001
    server, key = target
    started = time.perf_counter()
    output = _schemathesis(
        server, tmp_path, "examples,coverage,fuzzing,stateful", "not_a_server_error",
        ["--header", f"Authorization: Bearer {key}"],
    )  # fmt: skip
    assert re.search(r"Scenarios:\s+[1-9]", output), output[-3000:]  # the stateful phase ran
    figures("schemathesis[with key]", server_errors=0, seconds=round(time.perf_counter() - started, 1), summary=_summary(output))
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/health").status_code == 200


def test_schemathesis_without_credentials(target, tmp_path: Path) -> None:  # noqa: ANN001
    server, _ = target
    started = time.perf_counter()
    # Every protected operation must refuse: a 2xx (other than the public /health and /) fails this check.
    output = _schemathesis(server, tmp_path, "examples,coverage,fuzzing,stateful", "not_a_server_error,ignored_auth", [])
    figures("schemathesis[no key]", server_errors=0, seconds=round(time.perf_counter() - started, 1), summary=_summary(output))


def _samples() -> list[bytes]:
    out = []
    pixels = np.random.default_rng(5).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        out.append(buffer.getvalue())
    return out


SAMPLES = _samples()


@st.composite
def image_like_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid small image with bytes flipped, cut, inserted or its header altered."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=4096))
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "header-size"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            data = data[:position]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif action == "header-size" and len(data) > 24:
            data[16:24] = draw(st.binary(min_size=8, max_size=8))
    return bytes(data)


def test_decode_and_encode_never_crash_or_hang(tiny_encoder) -> None:  # noqa: ANN001
    outcomes = {"rejected": 0, "decoded": 0}
    slowest = [0.0]

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=timedelta(seconds=5),
        derandomize=not LONG,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(image_like_bytes())
    def decode_then_encode(data: bytes) -> None:
        started = time.perf_counter()
        try:
            image = open_image(data, max_pixels=MAX_PIXELS)
        except BadImageError as exc:
            assert exc.reason and len(exc.reason) <= 200
            outcomes["rejected"] += 1
        else:
            assert image.mode == "RGB" and 0 < image.width * image.height <= MAX_PIXELS
            embedding = tiny_encoder.encode_images([image])
            assert embedding.shape == (1, tiny_encoder.dim) and np.isfinite(embedding).all()
            outcomes["decoded"] += 1
        slowest[0] = max(slowest[0], time.perf_counter() - started)

    started = time.perf_counter()
    decode_then_encode()
    figures(
        "hypothesis decode+encode",
        examples=sum(outcomes.values()),
        **outcomes,
        crashes=0,
        slowest_example_s=round(slowest[0], 3),
        deadline_s=5,
        seconds=round(time.perf_counter() - started, 1),
    )
