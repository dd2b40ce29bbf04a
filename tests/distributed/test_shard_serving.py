"""Sharded search on Ray Serve (issue #16): a local Ray cluster, a collection on the real
PostgreSQL server, 3 shard deployments. Every search (text, image, item, filtered) returns
what one index over the whole collection returns; a new item is found through the shards at
the next search; killing one shard's replica makes answers partial, flagged with the missing
shard, until Serve has restarted it (from its saved index)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import ray
from ray import serve

import semstore
from semstore.config import Settings
from semstore.distributed.shard_serving import ShardedHits, application_name, deploy_shards
from semstore.encoders import TINY_TEST_MODEL
from semstore.storage import Shard
from tests.e2e.conftest import encode, make_image

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.postgres]

SHARDS = 3


def _images(start: int, count: int) -> list[tuple[str, bytes]]:
    return [(f"img{i}.png", encode(make_image(i, size=48), "PNG")) for i in range(start, start + count)]


def _assert_same(expected: list[semstore.SearchHit], got: ShardedHits) -> None:
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
    sharded = None
    try:
        collection = db.create_collection("photos")
        assert collection.add_images(_images(0, 40), metadata={"part": "a"}).added == 40
        assert collection.add_images(_images(40, 20), metadata={"part": "b"}).added == 20
        sharded = deploy_shards(settings, shards=SHARDS)
        queries = [
            collection.embed_query(text="a red circle"),
            collection.embed_query(text="a blue square"),
            collection.embed_query(image=_images(7, 1)[0][1]),
            collection.embed_query(item=5),
        ]
        for query in queries:
            for where in (None, {"part": "b"}):
                expected = collection.search_vector(query, k=10, where=where)
                _assert_same(expected, sharded.search_vector("photos", query, k=10, where=where))
        assert all(hit.metadata == {"part": "b"} for hit in sharded.search_vector("photos", queries[0], where={"part": "b"}).hits)

        # A new item is found through the shards at the next search (they catch up by revision).
        report = collection.add_images(_images(60, 1), metadata={"part": "c"})
        assert report.added == 1
        new_id = max(hit.id for hit in collection.search_vector(queries[0], k=100))
        found = sharded.search_vector("photos", collection.embed_query(item=new_id), k=1)
        assert [hit.id for hit in found.hits] == [new_id] and not found.partial

        # One shard's replica dies: the answer says which shard is missing and holds the others' hits.
        down = Shard(1, SHARDS)
        ray.kill(_replica_actor(application_name("semstore", down)), no_restart=False)
        partial = sharded.search_vector("photos", queries[0], k=10, timeout_s=2.0)
        assert partial.partial and partial.missing_shards == [down.number]
        assert partial.hits and not any(down.holds([hit.id])[0] for hit in partial.hits)
        others = [hit for hit in collection.search_vector(queries[0], k=100) if not down.holds([hit.id])[0]][:10]
        assert [hit.id for hit in partial.hits] == [hit.id for hit in others]

        # Serve restarts the replica; the service recovers (complete answers again).
        deadline = time.monotonic() + 120
        while True:
            answer = sharded.search_vector("photos", queries[0], k=10, timeout_s=5.0)
            if not answer.partial or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        _assert_same(collection.search_vector(queries[0], k=10), answer)
    finally:
        if sharded is not None:
            sharded.close()
        serve.shutdown()
        db.close()
