"""Sharded search on Ray Serve: one deployment per shard, each holding its shard's index.

:func:`deploy_shards` starts, on a running Ray cluster, one Serve application per shard
(``<name>-shard-N-of-S``, ``replicas`` replicas each, no HTTP route). A replica
(:class:`ShardReplica`) opens the database, keeps the index of its shard's items
(:meth:`semstore.Database.shard_index_service`: loaded from its saved folder when valid,
caught up by the collection's revision before every answer, so a restarted replica serves
again without a rebuild) and answers :func:`semstore.sharding.shard_candidates`.

:class:`ShardedSearch` is the ingress side: it resolves a metadata filter once (SQL), sends
the query vector and the matching ids to every shard, merges the candidates
(:func:`semstore.sharding.merge_candidates`: with exhaustive shard indexes, the answer of one
index over the whole collection) and reads the hit rows. A shard that does not answer within
``timeout_s`` is left out and named in the answer (:attr:`semstore.search.SearchResult.missing_shards`): a
partial answer says so, it never fails or comes back silently short.

Nothing here imports Ray at module import; it needs the ``distributed`` extra with Ray Serve
(``pip install 'ray[serve]'``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semstore.collection import DEFAULT_RERANK
from semstore.distributed.ray_ingest import INSTALL_HINT, RayNotInstalledError
from semstore.search import SearchResult, hits_for_pairs
from semstore.sharding import ShardCandidates, candidate_depth, merge_candidates, shard_candidates
from semstore.storage import CollectionRevision, Shard, shards_of

if TYPE_CHECKING:
    from semstore.collection import Collection
    from semstore.config import Settings
    from semstore.index_service import IndexService

logger = logging.getLogger(__name__)

#: Seconds the ingress waits for the shards of one query before answering without the late ones.
DEFAULT_SHARD_TIMEOUT_S = 5.0


class ShardReplica:
    """One replica of one shard deployment (a plain class; :func:`deploy_shards` makes it a
    Serve deployment). Holds a :class:`~semstore.Database` and its shard's index services."""

    def __init__(self, settings: dict[str, Any], shard_number: int, shard_count: int) -> None:
        import semstore
        from semstore.config import Settings

        self._settings = Settings(**settings)
        self._db = semstore.connect(settings=self._settings)
        self.shard = Shard(shard_number, shard_count)
        self._services: dict[int, IndexService] = {}

    def candidates(
        self, collection: str, collection_id: int, stored: CollectionRevision, query: np.ndarray, depth: int,
        exact: bool, allowed_ids: np.ndarray | None,
    ) -> ShardCandidates:  # fmt: skip
        """This shard's best ``depth`` items of ``collection`` for ``query`` (see
        :func:`shard_candidates`), from an index that reflects at least ``stored`` (the revision
        the ingress read for this query): no SQL at all unless the index is behind it."""
        service = self._service(collection, collection_id)
        index = service.fresh_as_of(stored) or service.fresh(stored)
        if index is None:  # no codec yet: nothing stored
            empty = np.empty(0, dtype=np.float32)
            return ShardCandidates(empty, np.empty(0, dtype=np.int64), empty.copy() if exact else None)
        service.save()  # only when enough changed since the last save: a restart then loads, not rebuilds
        return shard_candidates(index, query, depth, exact=exact, allowed_ids=allowed_ids)

    def _service(self, collection: str, collection_id: int) -> IndexService:
        service = self._services.get(collection_id)
        if service is None:
            target = self._db.collection(collection)
            if target.id != collection_id:
                raise LookupError(f"collection {collection!r} is no longer collection {collection_id}")
            service = self._services[collection_id] = self._db.shard_index_service(target, self.shard)
        return service

    def __del__(self) -> None:  # a replica shut down by Serve saves its index for the next start
        try:
            self._db.close()
        except Exception:  # noqa: BLE001 - best effort: a missing save costs a catch-up
            pass


def application_name(name: str, shard: Shard) -> str:
    return f"{name}-{shard.label}"


def deploy_shards(
    settings: Settings, *, shards: int, replicas: int = 1, name: str = "semstore", num_cpus: float = 0.0,
    timeout_s: float = DEFAULT_SHARD_TIMEOUT_S,
) -> ShardedSearch:
    """Deploy ``shards`` shard applications of ``replicas`` replicas on the connected Ray
    cluster (``ray.init(address)`` first) and return the ingress that searches them.

    Every replica opens ``settings.database_url`` (PostgreSQL for a real cluster: each node
    must reach it) with these settings. ``num_cpus`` per replica: 0 lets small test
    deployments share a machine; give real shards a CPU each.
    """
    try:
        from ray import serve
    except ImportError as exc:
        raise RayNotInstalledError(INSTALL_HINT) from exc

    if shards < 1 or replicas < 1:
        raise ValueError(f"shards and replicas must be at least 1, got {shards} and {replicas}")
    dumped = settings.model_dump(mode="json")
    deployment = serve.deployment(ShardReplica)
    handles = []
    for shard in shards_of(shards):
        app = deployment.options(
            name=f"shard-{shard.number}", num_replicas=replicas, ray_actor_options={"num_cpus": num_cpus}
        ).bind(dumped, shard.number, shard.count)
        handles.append(serve.run(app, name=application_name(name, shard), route_prefix=None))
    return ShardedSearch(handles, timeout_s=timeout_s)


class ShardedSearch:
    """The ingress of a sharded deployment: fan out a query, merge, read the hit rows.

    ``handles[n]`` answers for shard ``n`` of ``len(handles)`` (Serve deployment handles, or
    anything with the same ``.candidates.remote(...).result(timeout_s=...)`` shape). Used by a
    :class:`~semstore.Database` through :meth:`~semstore.Database.use_shard_search`, after
    which every ``Collection.search*`` call of that database goes through the shards.
    """

    def __init__(self, handles: Sequence[Any], *, timeout_s: float = DEFAULT_SHARD_TIMEOUT_S) -> None:
        if not handles:
            raise ValueError("a sharded search needs at least one shard")
        self.handles = list(handles)
        self.timeout_s = timeout_s

    def search(
        self, collection: Collection, query: np.ndarray, *, k: int, where: Mapping[str, Any] | None = None,
        rerank: int | None = DEFAULT_RERANK, timeout_s: float | None = None,
    ) -> SearchResult:  # fmt: skip
        """The top ``k`` of ``collection`` (``where`` already checked) from the shards; those
        that did not answer within ``timeout_s`` are listed in the result."""
        from semstore import storage

        database = collection.database
        vector = np.asarray(query, dtype=np.float32).reshape(1, -1)
        depth = candidate_depth(k, rerank)
        allowed = None
        with database.reads.connect() as connection:
            # One statement before the fan-out: the revision every shard must reflect (and
            # the filter's matching ids, resolved once for all shards).
            if where:
                allowed, stored = storage.filter_item_ids_with_revision(connection, collection_id=collection.id, where=where)
            else:
                stored = storage.SearchReads(connection).revision(collection.id)
        # (no pooled connection is held while the shards work: a slow shard would pin it)
        parts, missing = self._gather(collection, stored, vector, depth, rerank is not None, allowed, timeout_s)
        scores, ids = merge_candidates(parts, k, rerank)
        pairs = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        with database.reads.connect() as connection:
            rows, _ = storage.SearchReads(connection).hit_rows(collection.id, [i for _, i in pairs])
        return SearchResult(hits_for_pairs(rows, pairs), missing, len(self.handles))

    def _gather(
        self, collection: Collection, stored: CollectionRevision, vector: np.ndarray, depth: int, exact: bool,
        allowed: np.ndarray | None, timeout_s: float | None,
    ) -> tuple[list[ShardCandidates], list[int]]:  # fmt: skip
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        pending = [
            handle.candidates.remote(collection.name, collection.id, stored, vector, depth, exact, allowed)
            for handle in self.handles
        ]
        parts: list[ShardCandidates] = []
        missing: list[int] = []
        for number, response in enumerate(pending):
            try:
                parts.append(response.result(timeout_s=max(0.0, deadline - time.monotonic())))
            except Exception as exc:  # noqa: BLE001 - a down or late shard makes the answer partial
                logger.warning("shard %d of %d did not answer (%s): answering without it", number, len(pending), exc)
                missing.append(number)
                cancel = getattr(response, "cancel", None)
                if cancel is not None:
                    cancel()
        return parts, missing
