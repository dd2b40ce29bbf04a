"""Two server replicas on loopback against one PostgreSQL database.

An image uploaded through replica A must become searchable through replica B within
``STATED_DELAY`` seconds, by B's index poller catching its in-memory index up in place
(no rebuild, no restart); a delete through A must disappear from B the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from threadpoolctl import threadpool_limits

from semstore import apikeys
from tests.e2e.conftest import COLLECTION, LiveServer, e2e_settings, encode, make_image, start_server

pytestmark = pytest.mark.postgres

POLL_SECONDS = 0.5
#: The promise: another replica's write is searchable here within this many seconds
#: (one poll interval plus a catch-up, with a wide margin for a loaded 2-core machine).
STATED_DELAY = 10.0


@pytest.fixture
def replicas(postgres_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    with threadpool_limits(limits=1, user_api="blas"):
        servers = [
            start_server(e2e_settings(tmp_path / name, database_url=postgres_url, index_poll_seconds=POLL_SECONDS))
            for name in ("a", "b")
        ]
        try:
            yield servers[0], servers[1]
        finally:
            for server in servers:
                server.stop()


def _wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def _png(index: int) -> tuple[str, bytes, str]:
    return (f"img{index:02d}.png", encode(make_image(index), "PNG"), "image/png")


def test_write_through_one_replica_is_found_through_the_other(replicas: tuple[LiveServer, LiveServer]) -> None:
    a, b = replicas
    key = apikeys.create_api_key(a.app.state.semstore.database.get().sessions, "admin", "read-write")[1]
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=a.url, headers=headers, timeout=120) as via_a, httpx.Client(
        base_url=b.url, headers=headers, timeout=120
    ) as via_b:
        assert via_a.post("/v1/collections", json={"name": COLLECTION}).status_code == 201
        first = via_a.post(f"/v1/collections/{COLLECTION}/items", files=[("files", _png(i)) for i in range(12)])
        assert first.status_code == 200 and first.json()["added"] == 12, first.text

        # B builds its index once (its first poll or request), then only catches up.
        b_collection = b.app.state.semstore.database.get().collection(COLLECTION)
        _wait_for(lambda: b_collection.loaded_index is not None and len(b_collection.loaded_index) == 12, STATED_DELAY)
        index = b_collection.loaded_index

        name, data, mime = _png(40)
        added = via_a.post(f"/v1/collections/{COLLECTION}/items", files=[("files", (name, data, mime))])
        assert added.status_code == 200 and added.json()["added"] == 1, added.text
        new_id = added.json()["files"][0]["id"]
        delay = _wait_for(lambda: new_id in set(index.ids().tolist()), STATED_DELAY)
        print(f"replica B indexed the new item {delay:.2f} s after A stored it (poll every {POLL_SECONDS} s)")
        assert b_collection.loaded_index is index, "B rebuilt its index instead of catching up"
        assert len(index) == 13

        found = via_b.post(f"/v1/collections/{COLLECTION}/search/image", files={"image": (name, data, mime)}, data={"k": "3"})
        assert found.status_code == 200, found.text
        assert found.json()["hits"][0]["id"] == new_id

        assert via_a.delete(f"/v1/collections/{COLLECTION}/items/{new_id}").status_code == 204
        gone = _wait_for(lambda: new_id not in set(index.ids().tolist()), STATED_DELAY)
        print(f"replica B dropped the deleted item after {gone:.2f} s")
        assert b_collection.loaded_index is index and len(index) == 12
        hits = via_b.post(f"/v1/collections/{COLLECTION}/search/image", files={"image": (name, data, mime)}, data={"k": "20"})
        assert new_id not in [hit["id"] for hit in hits.json()["hits"]]
