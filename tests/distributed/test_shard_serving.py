"""Sharded search on Ray Serve (issue #16): a local Ray cluster, a collection on the real
PostgreSQL server, 3 shard deployments. Every search (text, image, item, filtered) returns
what one index over the whole collection returns, in Python and over HTTP (a real uvicorn
server started with shards = 3); a new item (an HTTP upload) is found through the shards at
the next search; killing one shard's replica makes answers partial, flagged with the missing
shard (field and header), until Serve has restarted it (from its saved index)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray
from ray import serve

import semstore
from semstore.config import Settings
from semstore.distributed.shard_serving import application_name, deploy_shards
from semstore.search import SearchResult
from semstore.encoders import TINY_TEST_MODEL
from semstore.storage import Shard
from tests.e2e.conftest import encode, make_image

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.postgres]

SHARDS = 3


def _images(start: int, count: int) -> list[tuple[str, bytes]]:
    return [(f"img{i}.png", encode(make_image(i, size=48), "PNG")) for i in range(start, start + count)]


def _assert_same(expected: list[semstore.SearchHit], got: SearchResult) -> None:
    assert not got.partial, got.missing_shards
    assert [hit.id for hit in got.hits] == [hit.id for hit in expected]
    np.testing.assert_allclose([hit.score for hit in got.hits], [hit.score for hit in expected], rtol=0, atol=1e-5)
    assert [hit.metadata for hit in got.hits] == [hit.metadata for hit in expected]


def _replica_actor(app: str) -> ray.actor.ActorHandle:
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("SERVE_REPLICA::")]
    mine = [name for name in names if f"::{app}#" in name]
    assert len(mine) == 1, names
    return ray.get_actor(mine[0], namespace="serve")


def test_sharded_search_on_ray_serve(local_ray: None, postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", database_url=postgres_url, model=TINY_TEST_MODEL, pretrained=None,
        codec_num_subvectors=8, batch_size=8, codec_bootstrap_size=32, index_kind="exhaustive",
    )  # fmt: skip
    db = semstore.connect(settings=settings)
    try:
        collection = db.create_collection("photos")
        assert collection.add_images(_images(0, 40), metadata={"part": "a"}).added == 40
        assert collection.add_images(_images(40, 20), metadata={"part": "b"}).added == 20
        sharded = deploy_shards(settings, shards=SHARDS)
        via = semstore.connect(settings=settings)  # the ingress's database: searches go through the shards
        via.use_shard_search(sharded)
        through = via.collection("photos")
        queries = [
            collection.embed_query(text="a red circle"),
            collection.embed_query(text="a blue square"),
            collection.embed_query(image=_images(7, 1)[0][1]),
            collection.embed_query(item=5),
        ]
        for query in queries:
            for where in (None, {"part": "b"}):
                expected = collection.search_vector(query, k=10, where=where)
                _assert_same(expected, through.search_result(query, k=10, where=where))
        assert all(hit.metadata == {"part": "b"} for hit in through.search_vector(queries[0], where={"part": "b"}))
        assert through.loaded_index is None  # the ingress holds no index: the shards do

        # A new item is found through the shards at the next search (they catch up by revision).
        report = collection.add_images(_images(60, 1), metadata={"part": "c"})
        assert report.added == 1
        new_id = max(hit.id for hit in collection.search_vector(queries[0], k=100))
        found = through.search_result(collection.embed_query(item=new_id), k=1)
        assert [hit.id for hit in found.hits] == [new_id] and not found.partial

        # One shard's replica dies: the answer says which shard is missing and holds the others' hits.
        down = Shard(1, SHARDS)
        ray.kill(_replica_actor(application_name("semstore", down)), no_restart=False)
        sharded.timeout_s = 2.0
        partial = through.search_result(queries[0], k=10)
        assert partial.partial and partial.missing_shards == [down.number]
        assert partial.hits and not any(down.holds([hit.id])[0] for hit in partial.hits)
        others = [hit for hit in collection.search_vector(queries[0], k=100) if not down.holds([hit.id])[0]][:10]
        assert [hit.id for hit in partial.hits] == [hit.id for hit in others]

        # Serve restarts the replica; the service recovers (complete answers again).
        deadline = time.monotonic() + 120
        while True:
            answer = through.search_result(queries[0], k=10)
            if not answer.partial or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        _assert_same(collection.search_vector(queries[0], k=10), answer)
        via.close()
    finally:
        serve.shutdown()
        db.close()


def _wait_until_complete(search: Callable[[], tuple[bool, object]], seconds: float = 120) -> object:
    deadline = time.monotonic() + seconds
    while True:
        partial, answer = search()
        if not partial or time.monotonic() > deadline:
            return answer
        time.sleep(1.0)


def test_http_server_with_shards_on_ray_serve(local_ray: None, postgres_url: str, tmp_path: Path) -> None:
    from server.routers.search import PARTIAL_HEADER
    from tests.e2e.conftest import start_server

    settings = Settings(
        data_dir=tmp_path / "data", database_url=postgres_url, model=TINY_TEST_MODEL, pretrained=None,
        codec_num_subvectors=8, batch_size=8, codec_bootstrap_size=32, index_kind="exhaustive",
        api_keys_disabled=True, host="127.0.0.1", rate_limit_per_minute=0, shards=SHARDS, shard_timeout_seconds=2.0,
    )  # fmt: skip
    db = semstore.connect(settings=settings.model_copy(update={"shards": 1}))  # the reference: one index
    server = None
    try:
        collection = db.create_collection("photos")
        assert collection.add_images(_images(0, 40), metadata={"part": "a"}).added == 40
        server = start_server(settings)
        url = f"{server.url}/v1/collections/photos"
        with httpx.Client(timeout=120) as client:
            def search(body: dict) -> httpx.Response:
                response = client.post(f"{url}/search", json=body)
                assert response.status_code == 200, response.text
                return response

            for body, query in (
                ({"text": "a red circle", "k": 10}, collection.embed_query(text="a red circle")),
                ({"text": "a red circle", "k": 5, "where": {"part": "a"}}, collection.embed_query(text="a red circle")),
                ({"item_id": 5, "k": 10}, collection.embed_query(item=5)),
            ):
                expected = collection.search_vector(query, k=body["k"], where=body.get("where"))
                answer = search(body)
                assert PARTIAL_HEADER.lower() not in answer.headers and answer.json()["partial"] is False
                assert [hit["id"] for hit in answer.json()["hits"]] == [hit.id for hit in expected]
            image = _images(7, 1)[0][1]
            by_image = client.post(f"{url}/search/image", files={"image": ("q.png", image, "image/png")}, data={"k": "10"})
            assert by_image.status_code == 200, by_image.text
            expected = collection.search_vector(collection.embed_query(image=image), k=10)
            assert [hit["id"] for hit in by_image.json()["hits"]] == [hit.id for hit in expected]

            # An upload through the API is found through the shards at the next search.
            uploaded = client.post(f"{url}/items", files=[("files", ("new.png", _images(90, 1)[0][1], "image/png"))])
            assert uploaded.status_code == 200, uploaded.text
            new_id = uploaded.json()["files"][0]["id"]
            assert [hit["id"] for hit in search({"item_id": new_id, "k": 1}).json()["hits"]] == [new_id]

            # A dead shard replica: 200 with partial = true, the missing shard named, and the header.
            ray.kill(_replica_actor(application_name("semstore", Shard(2, SHARDS))), no_restart=False)
            answer = search({"text": "a red circle", "k": 10})
            assert answer.json()["partial"] is True and answer.json()["missing_shards"] == [2]
            assert answer.headers[PARTIAL_HEADER] == "missing=2"
            assert all(hit["id"] % SHARDS != 2 for hit in answer.json()["hits"]) and answer.json()["hits"]

            def complete() -> tuple[bool, httpx.Response]:
                response = search({"text": "a red circle", "k": 10})
                return response.json()["partial"], response

            recovered = _wait_until_complete(complete)
            expected = collection.search_vector(collection.embed_query(text="a red circle"), k=10)
            assert [hit["id"] for hit in recovered.json()["hits"]] == [hit.id for hit in expected]
    finally:
        if server is not None:
            server.stop()
        serve.shutdown()
        db.close()
