"""Item 4: 4 writers and 16 readers over loopback against a server process, SQLite and PostgreSQL.

Writers upload new images and delete some of their own; readers search by text and by
item, get items and list collections. Every response is checked as it arrives: no 5xx,
no "database is locked" text, no search hit whose item had already been deleted when the
search was sent. At the end: acknowledged (added minus deleted) == database count ==
the server's index size (``/metrics``), and every id a search ever returned was an
acknowledged item.
"""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.reliability.conftest import COLLECTION, figures, image_bytes, scaled, serve_photos, server_errors_in

pytestmark = pytest.mark.reliability

WRITERS, READERS = 4, 16
SECONDS = scaled(20, 120)
COLL = f"/v1/collections/{COLLECTION}"


class Ledger:
    """What clients were told, shared by every thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.alive: set[int] = set()
        self.deleted: set[int] = set()
        self.deleting: set[int] = set()  # a DELETE was sent (its answer may not be recorded yet)
        self.hits_seen: set[int] = set()
        self.requests = 0
        self.statuses: dict[int, int] = {}
        self.problems: list[str] = []

    def record(self, what: str, response: httpx.Response, ok: tuple[int, ...]) -> bool:
        with self.lock:
            self.requests += 1
            self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
            if "database is locked" in response.text.lower():
                self.problems.append(f"{what}: 'database is locked' reached the client")
            if response.status_code not in ok:
                self.problems.append(f"{what}: {response.status_code} {response.text[:200]}")
                return False
            return True


def writer(served, ledger: Ledger, number: int, stop: threading.Event) -> None:  # noqa: ANN001
    rng = random.Random(number)
    mine: list[int] = []
    serial = 0
    with served.client(served.admin) as client:
        while not stop.is_set():
            files = []
            for _ in range(rng.randint(1, 3)):
                serial += 1
                files.append(("files", (f"w{number}-{serial}.png", image_bytes(1_000_000 * (number + 1) + serial), "image/png")))
            response = client.post(f"{COLL}/items", files=files)
            if ledger.record("upload", response, (200,)):
                ids = [entry["id"] for entry in response.json()["files"] if entry["status"] == "added"]
                with ledger.lock:
                    ledger.alive.update(ids)
                mine.extend(ids)
            if mine and rng.random() < 0.4:
                victim = mine.pop(rng.randrange(len(mine)))
                with ledger.lock:
                    ledger.deleting.add(victim)
                response = client.delete(f"{COLL}/items/{victim}")
                if ledger.record("delete", response, (204,)):
                    with ledger.lock:
                        ledger.alive.discard(victim)
                        ledger.deleted.add(victim)


def reader(served, ledger: Ledger, number: int, stop: threading.Event) -> None:  # noqa: ANN001
    rng = random.Random(1000 + number)
    with served.client(served.reader) as client:
        while not stop.is_set():
            with ledger.lock:
                deleted_before = set(ledger.deleted)
                alive = sorted(ledger.alive)
            choice = rng.random()
            if choice < 0.45 or not alive:
                response = client.post(f"{COLL}/search", json={"text": rng.choice(["a red circle", "blue", "x"]), "k": 10})
                ok: tuple[int, ...] = (200,)
                probe = None
            elif choice < 0.8:
                probe = rng.choice(alive)
                response = client.post(f"{COLL}/search", json={"item_id": probe, "k": 10})
                ok = (200, 404)
            elif choice < 0.95:
                probe = rng.choice(alive)
                response = client.get(f"{COLL}/items/{probe}")
                ok = (200, 404)
            else:
                response = client.get("/v1/collections")
                ok, probe = (200,), None
            if not ledger.record("read", response, ok):
                continue
            if response.status_code == 404:
                with ledger.lock:  # only an item deleted meanwhile may be missing
                    if probe not in ledger.deleting:
                        ledger.problems.append(f"404 for item {probe}, which was never deleted")
                continue
            hits = [hit["id"] for hit in response.json().get("hits", [])]
            stale = [hit for hit in hits if hit in deleted_before]
            with ledger.lock:
                ledger.hits_seen.update(hits)
                if stale:
                    ledger.problems.append(f"search returned items deleted before it was sent: {stale}")


def _index_size(client: httpx.Client) -> int:
    body = client.get("/metrics").text
    match = re.search(rf'^semstore_index_vectors\{{collection="{COLLECTION}"\}} (\S+)$', body, re.MULTILINE)
    assert match, body[-2000:]
    return int(float(match.group(1)))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_writers_and_readers_lose_nothing(backend: str, request: pytest.FixtureRequest, tmp_path: Path, shipped_codec, tiny_encoder) -> None:  # noqa: ANN001
    url = f"sqlite:///{tmp_path / 'busy.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    served = serve_photos(url, tmp_path, shipped_codec[0], tiny_encoder)
    ledger = Ledger()
    stop = threading.Event()
    threads = [threading.Thread(target=writer, args=(served, ledger, i, stop)) for i in range(WRITERS)]
    threads += [threading.Thread(target=reader, args=(served, ledger, i, stop)) for i in range(READERS)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(SECONDS)
        stop.set()
        for thread in threads:
            thread.join(timeout=300)
        assert not any(thread.is_alive() for thread in threads), "a client thread hung"
        with served.client(served.admin) as client:
            api_count = client.get(COLL).json()["items"]
            index_size = _index_size(client)
    finally:
        log = served.server.stop()
    engine = create_engine(url)
    with engine.connect() as connection:
        db_ids = set(connection.execute(text("SELECT id FROM items")).scalars())
    engine.dispose()
    figures(
        f"concurrency[{backend}]",
        seconds=SECONDS,
        writers=WRITERS,
        readers=READERS,
        requests=ledger.requests,
        status_counts=dict(sorted(ledger.statuses.items())),
        responses_5xx=sum(n for s, n in ledger.statuses.items() if s >= 500),
        acknowledged=len(ledger.alive),
        deleted=len(ledger.deleted),
        database_count=len(db_ids),
        index_size=index_size,
        problems=len(ledger.problems),
    )
    assert not ledger.problems, ledger.problems[:10]
    assert not server_errors_in(log), log[-4000:]
    assert db_ids == ledger.alive
    assert api_count == len(ledger.alive) == index_size
    assert ledger.hits_seen <= ledger.alive | ledger.deleted, "a search returned an id never acknowledged"
    assert ledger.alive and ledger.deleted
