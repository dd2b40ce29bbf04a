"""Property-based testing of the whole OpenAPI schema with schemathesis: no 5xx, no schema violation.

Runs the schemathesis CLI (bounded: a fixed number of examples per operation, fixed seed)
against a dedicated server whose collection ``photos`` holds a few items, with a
read-write key. Path parameters point at that collection and one of its items so the
generated bodies reach search, classification, metadata updates and thumbnails; the
destructive DELETE routes are pointed at names and ids that do not exist.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from semstore import apikeys, transfer
from tests.e2e.conftest import COLLECTION, LiveServer, Photos, encode, make_image, start_server

MAX_EXAMPLES = 25
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"

CONFIG = """
[parameters]
"path.name" = "photos"
"path.item_id" = 2

[[operations]]
include-operation-id = "delete_collection_v1_collections__name__delete"
parameters = { "path.name" = "not-this-one" }

[[operations]]
include-operation-id = "delete_item_v1_collections__name__items__item_id__delete"
parameters = { "path.item_id" = 999999 }
"""


@pytest.fixture
def fuzz_target(photos: Photos, tmp_path: Path) -> Iterator[tuple[LiveServer, str]]:
    """A fresh server whose ``photos`` reuses the shared server's codec (no training needed)."""
    (tmp_path / "allowed").mkdir()
    settings = photos.settings.model_copy(
        update={
            "data_dir": tmp_path / "data",
            "database_url": f"sqlite:///{tmp_path / 'fuzz.db'}",
            "allowed_ingest_roots": [tmp_path / "allowed"],
        }
    )
    source = photos.server.app.state.semstore.database.get()
    codec = transfer.load_stored_codec(source, source.collection(COLLECTION).codec.content_hash)
    server = start_server(settings)
    try:
        database = server.app.state.semstore.database.get()
        collection = database.create_collection(COLLECTION, codec=codec)
        report = collection.add_images([(f"f{i}.png", encode(make_image(8000 + i), "PNG")) for i in range(12)])
        assert report.added == 12
        yield server, apikeys.create_api_key(database.sessions, "fuzzer", "read-write")[1]
    finally:
        server.stop()


def test_openapi_schema_holds_under_fuzzing(fuzz_target: tuple[LiveServer, str], tmp_path: Path) -> None:
    server, key = fuzz_target
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config),
        "run", f"{server.url}/openapi.json",
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES),
        "--phases", "examples,coverage,fuzzing",
        "--header", f"Authorization: Bearer {key}",
        "--seed", "20261125",
        "--no-shrink",
        "--request-timeout", "60",
        "--workers", "1",
        "--report", "junit", "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    assert "passed" in result.stdout
    # The fixed path parameters must have let the generated requests reach real items.
    assert "Missing test data" not in result.stdout or "GET /v1/collections/{name}/items" not in result.stdout
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as client:
        assert client.get("/health").status_code == 200
        assert client.get(f"/v1/collections/{COLLECTION}").json()["items"] >= 12
