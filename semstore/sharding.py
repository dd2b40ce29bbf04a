"""Search over the shards of a collection, merged into what one index over all its items answers.

Each shard (:class:`semstore.storage.Shard`: the items with ``id % count == number``) holds
its own index (:meth:`semstore.Database.shard_index_service`). For one query, a shard returns
its best ``depth`` items by ADC score with the exact cosines of their decoded codes
(:func:`shard_candidates`); the merge (:func:`merge_candidates`) keeps the ``depth`` best ADC
scores over all shards and ranks those by cosine. Every item's ADC score and cosine do not
depend on which other items share its index, so with exhaustive shard indexes this is the
answer of one exhaustive index over the whole collection: the same ``depth`` candidates (the
global ADC top ``depth`` is the top ``depth`` of the shards' top ``depth`` lists), re-ranked
the same way. Scores compare across shards because a collection has one codec.

Nothing here fans out by itself over a network: a serving layer (e.g. Ray Serve deployments,
one per shard) calls :func:`shard_candidates` where the shard lives and :func:`merge_candidates`
where the query came in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from semstore.index import ADCIndex
from semstore.index.ivf_index import IVFIndex

if TYPE_CHECKING:
    from semstore.collection import Collection
    from semstore.search import SearchResult

SearchIndex = ADCIndex | IVFIndex


class ShardSearch(Protocol):
    """What a :class:`~semstore.Database` answers searches through when it serves shards
    (:meth:`semstore.Database.use_shard_search`)."""

    def search(
        self, collection: Collection, query: np.ndarray, *, k: int, where: Mapping[str, Any] | None,
        rerank: int | None,
    ) -> SearchResult:  # fmt: skip
        """The top ``k`` of ``collection`` for ``query`` (filter already checked), and which shards are missing."""
        ...


@dataclass(frozen=True)
class ShardCandidates:
    """One shard's best items for one query: ADC scores, ids, and exact cosines (None
    when the caller wants raw ADC scores only), best ADC score first."""

    adc: np.ndarray
    ids: np.ndarray
    cosine: np.ndarray | None

    def __len__(self) -> int:
        return int(self.ids.size)


def candidate_depth(k: int, rerank: int | None) -> int:
    """How many ADC candidates a search of ``k`` results re-ranks (as :meth:`ADCIndex.search`)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k) if rerank is None else max(int(rerank), int(k))


def shard_candidates(
    index: SearchIndex, query: Any, depth: int, *, exact: bool = True, allowed_ids: Any | None = None
) -> ShardCandidates:
    """The shard index's best ``depth`` items for one query (1, dim) by ADC score; with
    ``exact`` also the cosine of each one's decoded codes with the query."""
    vector = np.asarray(query, dtype=np.float32).reshape(1, -1)
    if len(index) == 0 or (allowed_ids is not None and len(np.asarray(allowed_ids).reshape(-1)) == 0):
        empty = np.empty(0, dtype=np.float32)
        return ShardCandidates(empty, np.empty(0, dtype=np.int64), empty.copy() if exact else None)
    scores, ids = index.search(vector, depth, allowed_ids=allowed_ids)
    found = ids[0] >= 0
    adc, ids = scores[0][found], ids[0][found]
    cosine = None
    if exact:
        unit = vector[0] / max(float(np.linalg.norm(vector[0])), 1e-12)
        cosine = np.zeros(0, dtype=np.float32)
        if ids.size:
            decoded = index.codec.refined_decode(index.codes_for(ids), normalize=True)
            cosine = (decoded @ unit).astype(np.float32)
    return ShardCandidates(adc.astype(np.float32), ids.astype(np.int64), cosine)


def merge_candidates(parts: Sequence[ShardCandidates], k: int, rerank: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` over all shards' candidates: ``(scores (1, k), ids (1, k))``, padded with
    ``-inf`` / ``-1`` like an index search; cosines when re-ranking, ADC scores otherwise."""
    depth = candidate_depth(k, rerank)
    out_scores = np.full((1, k), -np.inf, dtype=np.float32)
    out_ids = np.full((1, k), -1, dtype=np.int64)
    present = [part for part in parts if len(part)]
    if not present:
        return out_scores, out_ids
    adc = np.concatenate([part.adc for part in present])
    ids = np.concatenate([part.ids for part in present])
    best = np.argsort(-adc, kind="stable")[:depth]
    if rerank is None:
        chosen, scores = best[:k], adc[best[:k]]
    else:
        if any(part.cosine is None for part in present):
            raise ValueError("re-ranking needs the shards' exact cosines (shard_candidates(..., exact=True))")
        cosine = np.concatenate([part.cosine for part in present])  # type: ignore[misc]
        chosen = best[np.argsort(-cosine[best], kind="stable")[:k]]
        scores = cosine[chosen]
    out_scores[0, : len(chosen)] = scores
    out_ids[0, : len(chosen)] = ids[chosen]
    return out_scores, out_ids


def search_shards(
    indexes: Sequence[SearchIndex], query: Any, k: int, *, rerank: int | None = None, allowed_ids: Any | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Search every shard index in this process and merge: the in-process form of a fan-out."""
    depth = candidate_depth(k, rerank)
    parts = [shard_candidates(index, query, depth, exact=rerank is not None, allowed_ids=allowed_ids) for index in indexes]
    return merge_candidates(parts, k, rerank)
