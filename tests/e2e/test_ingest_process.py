"""Uploads in the server's ingest worker process (``settings.ingest_processes``, issue #15).

A server of its own (a worker is killed here): the upload runs in a niced child process
of the server (the server's debug log names its pid), a search right after it finds the
item, a killed worker gives a 503 with the error shape, and the next upload gets a new
worker; nothing half written is left behind (the kept originals are exactly those of the
stored items).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from semstore.config import Settings
from server.ingest_process import IngestProcesses, build_ingest
from server.ingest_threads import INGEST_NICENESS, IngestThreads
from tests.e2e.conftest import LiveServer, assert_error, assert_top, e2e_settings, encode, make_image, start_server

NAME = "workers"
ITEMS = f"/v1/collections/{NAME}/items"
_WORKER_LOG = re.compile(rf"collection '{NAME}': ingest ran in worker process (\d+)")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Settings]]:
    root = tmp_path_factory.mktemp("ingest-process")
    (root / "allowed").mkdir()
    settings = e2e_settings(
        root, ingest_processes=1, api_keys_disabled=True, max_upload_bytes=64 * 1024 * 1024,
        allowed_ingest_roots=[root / "allowed"],
    )  # fmt: skip
    server = start_server(settings)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
        yield server, settings
    finally:
        server.stop()


@pytest.fixture
def client(served: tuple[LiveServer, Settings], caplog: pytest.LogCaptureFixture) -> Iterator[httpx.Client]:
    caplog.set_level(logging.DEBUG, logger="semstore.server")
    with httpx.Client(base_url=served[0].url, timeout=300) as http:
        yield http


def upload(client: httpx.Client, seeds: range, size: int = 96) -> httpx.Response:
    files = [("files", (f"w{seed}.png", encode(make_image(seed, size), "PNG"), "image/png")) for seed in seeds]
    return client.post(ITEMS, files=files)


def worker_pid(caplog: pytest.LogCaptureFixture) -> int:
    """The worker process the last upload into ``NAME`` ran in, from the server's debug log."""
    found = [int(m.group(1)) for record in caplog.records if (m := _WORKER_LOG.search(record.getMessage()))]
    assert found, "the server logged no ingest in a worker process"
    return found[-1]


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def gone(pid: int, timeout: float = 30.0) -> bool:
    """Whether ``pid`` has exited (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def kept_originals(settings: Settings) -> set[str]:
    """The content hashes of the kept upload originals (temp files included, as themselves)."""
    folder = settings.upload_directory(NAME)
    return {path.stem if not path.name.startswith(".upload-") else path.name
            for path in folder.iterdir() if path.name != ".lock"} if folder.is_dir() else set()  # fmt: skip


def stored_items(server: LiveServer) -> dict[int, str]:
    """Every item of ``NAME``: id -> source URI, read from the database."""
    engine = server.app.state.semstore.database.get().engine
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT i.id, i.source_uri FROM items i JOIN collections c ON c.id = i.collection_id WHERE c.name = :n"),
            {"n": NAME},
        )
        return {int(item_id): uri for item_id, uri in rows}


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_an_upload_runs_in_a_niced_worker_process_and_is_found_at_once(
    client: httpx.Client, caplog: pytest.LogCaptureFixture, served: tuple[LiveServer, Settings]
) -> None:
    assert isinstance(served[0].app.state.semstore.ingest, IngestProcesses)
    first = upload(client, range(0, 8))
    assert first.status_code == 200, first.text
    pid = worker_pid(caplog)
    assert pid != os.getpid() and parent_of(pid) == os.getpid()  # a child of the server's process
    niced = min(os.getpriority(os.PRIO_PROCESS, 0) + INGEST_NICENESS, 19)
    threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    assert {tid: os.getpriority(os.PRIO_PROCESS, tid) for tid in threads} == dict.fromkeys(threads, niced)  # every thread
    for offset in range(2):  # right after each upload, the search finds the new item (the index caught up)
        response = upload(client, range(100 + offset, 101 + offset))
        assert response.status_code == 200 and response.json()["added"] == 1, response.text
        item_id = response.json()["files"][0]["id"]
        hits = client.post(f"/v1/collections/{NAME}/search", json={"item_id": item_id, "k": 5})
        assert hits.status_code == 200, hits.text
        assert_top(hits.json()["hits"], item_id)
        assert worker_pid(caplog) == pid  # the same worker, kept between requests
    # A path ingest runs there too.
    folder = served[1].allowed_ingest_roots[0]
    make_image(200).save(folder / "p200.png")
    response = client.post(f"{ITEMS}/ingest", json={"paths": [str(folder / "p200.png")]})
    assert response.status_code == 200 and response.json()["added"] == 1, response.text
    assert worker_pid(caplog) == pid
    # A bad image still gets its own line in the report.
    mixed = client.post(ITEMS, files=[("files", ("bad.png", b"not an image", "image/png")),
                                      ("files", ("good.png", encode(make_image(300), "PNG"), "image/png"))])  # fmt: skip
    assert mixed.status_code == 200, mixed.text
    assert [entry["status"] for entry in mixed.json()["files"]] == ["failed", "added"]
    assert_error(client.post(ITEMS, files=[("files", ("bad.png", b"not an image", "image/png"))]), 422, "bad_images")


def test_the_workers_items_are_applied_in_place_not_caught_up(
    client: httpx.Client, served: tuple[LiveServer, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker announces its commits: the server's index counts them as its own writes in
    flight (a search meanwhile does not stop to catch up) and applies the new rows in place."""
    import semstore.index_service

    assert upload(client, range(400, 402)).status_code == 200  # (the index is loaded by now)
    catch_ups: list[object] = []
    real = semstore.index_service.catch_up

    def counted(*args: object, **kwargs: object) -> object:
        catch_ups.append(kwargs.get("collection_id"))
        return real(*args, **kwargs)

    monkeypatch.setattr(semstore.index_service, "catch_up", counted)
    searching = threading.Event()
    answers: list[int] = []

    def search_meanwhile() -> None:
        with httpx.Client(base_url=served[0].url, timeout=60) as other:
            while not searching.is_set():
                response = other.post(f"/v1/collections/{NAME}/search", json={"text": "anything", "k": 3})
                answers.append(response.status_code)

    searcher = threading.Thread(target=search_meanwhile)
    searcher.start()
    try:
        for start in range(500, 520, 4):
            response = upload(client, range(start, start + 4))
            assert response.status_code == 200 and response.json()["added"] == 4, response.text
            item_id = response.json()["files"][0]["id"]
            assert_top(client.post(f"/v1/collections/{NAME}/search", json={"item_id": item_id, "k": 5}).json()["hits"], item_id)
    finally:
        searching.set()
        searcher.join(60)
    assert answers and set(answers) == {200}
    assert catch_ups == [], "the server caught up with its own worker's writes"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_a_killed_worker_gives_a_503_and_the_next_upload_gets_a_new_one(
    client: httpx.Client, caplog: pytest.LogCaptureFixture, served: tuple[LiveServer, Settings]
) -> None:
    settings = served[1]
    ok = upload(client, range(1000, 1002))
    assert ok.status_code == 200, ok.text
    ids = [entry["id"] for entry in ok.json()["files"]]
    pid = worker_pid(caplog)

    # Killed between requests: the next request learns it and gets the error.
    os.kill(pid, signal.SIGKILL)
    assert gone(pid)
    assert_error(upload(client, range(1100, 1102)), 503, "ingest_worker_lost")
    again = upload(client, range(1100, 1102))
    assert again.status_code == 200 and again.json()["added"] == 2, again.text
    ids += [entry["id"] for entry in again.json()["files"]]
    new_pid = worker_pid(caplog)
    assert new_pid != pid and not gone(new_pid, timeout=0)

    # Killed in the middle of an upload (big PNGs keep it busy decoding): 503, not a dead server.
    killed = False
    for attempt in range(4):
        pid = worker_pid(caplog)
        seeds = range(2000 + 100 * attempt, 2000 + 100 * attempt + 16)
        before = cpu_ticks(pid)
        answer: list[httpx.Response] = []
        sender = threading.Thread(target=lambda: answer.append(upload(client, seeds, size=1600)))
        sender.start()
        while sender.is_alive() and cpu_ticks(pid) - before < 5:  # it is working on this request
            time.sleep(0.002)
        if sender.is_alive():
            cpu_ticks_seen = cpu_ticks(pid) - before
            os.kill(pid, signal.SIGKILL)
        sender.join(300)
        assert answer, "no answer"
        if answer[0].status_code == 200:  # finished before the kill: try again, with new images
            ids += [entry["id"] for entry in answer[0].json()["files"] if entry["id"]]
            continue
        assert_error(answer[0], 503, "ingest_worker_lost")
        killed = True
        print(f"\nworker {pid} killed during upload attempt {attempt + 1}, after {cpu_ticks_seen} CPU ticks of it")
        # Items the worker committed before it died are kept; a retry stores the rest once.
        retry = upload(client, seeds, size=1600)
        assert retry.status_code == 200, retry.text
        assert retry.json()["added"] + retry.json()["skipped"] == len(seeds)
        ids += [entry["id"] for entry in retry.json()["files"] if entry["id"]]
        break
    assert killed, "the worker finished every upload before it could be killed"
    # Nothing half written: the kept originals are exactly those of the stored uploads, and
    # every stored item is searchable.
    stored = stored_items(served[0])
    assert set(ids) <= set(stored)
    assert kept_originals(settings) == {uri.split("/")[2] for uri in stored.values() if uri.startswith("upload://")}
    with httpx.Client(base_url=served[0].url, timeout=60) as other:
        last = upload(other, range(3000, 3001))
        assert last.status_code == 200 and last.json()["added"] == 1, last.text
        item_id = last.json()["files"][0]["id"]
        assert_top(other.post(f"/v1/collections/{NAME}/search", json={"item_id": item_id, "k": 5}).json()["hits"], item_id)
    for item_id in stored:
        hits = client.post(f"/v1/collections/{NAME}/search", json={"item_id": item_id, "k": 3})
        assert hits.status_code == 200 and item_id in {hit["id"] for hit in hits.json()["hits"]}, hits.text


def test_the_workers_stop_with_the_server(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="semstore.server")
    server = start_server(e2e_settings(tmp_path, ingest_processes=1, api_keys_disabled=True))
    try:
        with httpx.Client(base_url=server.url, timeout=300) as http:
            assert http.post("/v1/collections", json={"name": NAME}).status_code == 201
            assert upload(http, range(5)).status_code == 200
        pid = worker_pid(caplog)
        assert not gone(pid, timeout=0)
    finally:
        server.stop()
    assert gone(pid)


def test_threads_instead_when_asked_or_when_the_encoder_factory_cannot_be_sent(tmp_path: Path) -> None:
    assert Settings.model_fields["ingest_processes"].default == 1  # processes by default
    settings = e2e_settings(tmp_path, ingest_processes=1)
    runners = [
        build_ingest(settings),
        build_ingest(e2e_settings(tmp_path, ingest_processes=0)),
        build_ingest(settings, lambda model, pretrained: None),  # type: ignore[arg-type,return-value]
    ]
    try:
        assert [type(runner) for runner in runners] == [IngestProcesses, IngestThreads, IngestThreads]
    finally:
        for runner in runners:
            runner.shutdown()
