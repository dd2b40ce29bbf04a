"""Near-duplicate groups from the stored codes alone: a self-kNN join over a collection's index.

Exact duplicates (the same bytes) are refused at ingest by their content hash; this finds
the copies that hashing misses: resized, recompressed, slightly cropped. Two items are
*similar* when the cosine of their decoded embeddings (``codec.decode(codes)``, normalised)
is at least ``threshold``; a group is a connected set of similar items (union-find: a ~ b
and b ~ c put a, b and c in one group even when a and c are less similar).

How it runs (:func:`find_duplicates`), without ever holding a float embedding per item:

1. the items' ids are taken in ``batch``-sized slices; each slice's codes are decoded and
   normalised, searched in the index for the ``neighbours + 1`` nearest items (the index's
   ADC pass, then the exact cosine re-rank of the best ``2 * (neighbours + 1)`` candidates),
   and dropped: only the pairs scoring at least ``threshold`` (self excluded) are kept;
2. the pairs are joined into groups by union-find; only groups of two or more items are
   returned, each with its ids ascending, the groups ordered by their smallest id.

The index is only read, and may change meanwhile: items deleted while the join runs are
skipped from then on (a group may still name one: look its id up before use), items added
are not compared.

Cost and recall:

* an :class:`~semstore.index.ivf_index.IVFIndex` is searched as it is (``nprobe`` lists per
  query, :data:`DEFAULT_NPROBE` unless told): each query scans ``nprobe`` lists of about
  ``N / nlist`` items, so with ``nlist`` about ``sqrt(N)`` the whole join costs about
  ``nprobe * N * sqrt(N)`` code look-ups instead of the ``N^2 / 2`` pairs of an all-pairs
  comparison (10^6 items, nprobe 8: 8 * 10^9 look-ups instead of 5 * 10^11 pairs). Measured
  (``bench/duplicates.py``, 2 cores, 16-byte codes, threshold 0.95): 10^5 items in 29 s, 3 s
  of it building the temporary index below, with a peak of about 300 MiB above the loaded
  index (mostly the sample of up to 65,536 decoded vectors that trains the lists);
* an exhaustive index (:class:`~semstore.index.ADCIndex`) of at most ``ivf_above`` items
  (:data:`IVF_ABOVE`) is searched exhaustively: every similar pair within an item's
  ``neighbours`` nearest is found. Above that, a temporary ``IVFIndex`` over the same codes
  (``nlist`` about ``sqrt(N)``, trained on a sample, filled chunk by chunk: about
  ``2 * N * (M + 8)`` bytes more while it runs) is searched instead and dropped afterwards.
  Codebooks of at most 16 codewords (4-bit fast-scan codes) have no IVF form and are always
  scanned exhaustively;
* the recall trade-offs: (a) a pair is missed when neither item's ``nprobe`` best lists hold
  the other (near-duplicates' decoded vectors are close, so they nearly always share a list,
  but a pair near a list boundary can be split: raise ``nprobe`` to trade time for recall;
  ``bench/duplicates.py`` measured a recall of 1.0 of the 652 planted pairs reaching the
  threshold, 0.95 then, among 10^5 items at nprobe 8); (b) an item with more than
  ``neighbours`` similar items keeps only its ``neighbours`` nearest as direct pairs, which
  still joins them into one group as long as the kept pairs connect them (true of tight
  groups of identical or near-identical copies).

The threshold is a cosine between *decoded* embeddings, and decoding caps it: two copies
whose float embeddings are almost equal still get partly different codes (the encoder's
beam search is discontinuous), so their decoded cosine sits near the codec's own
reconstruction cosine, not near 1. Measured with the default 16 x 8-bit codec (128 bits)
trained on 5,000 SYNTHETIC 512-d CLIP-like vectors (``bench/search_data.py``; no CLIP
weights in this repository), pairs made by moving held-out vectors in a random direction
to a float cosine c reached a decoded cosine >= 0.90 in 96 % (c = 0.995), 92 % (c = 0.98),
84 % (c = 0.95) and 62 % (c = 0.90) of cases, but >= 0.95 in only 49 % / 25 % / 8 % / 1 %;
no pair of 4,000 unrelated vectors reached 0.90 (the highest: 0.89). Hence the default
:data:`DEFAULT_THRESHOLD` of 0.90: with a real CLIP model it should group re-encoded (JPEG),
resized and slightly cropped copies, whose float CLIP embeddings typically agree to 0.97 or
more (general CLIP behaviour, not measured here), and also some very similar but different
photos (burst shots; float cosine about 0.9): raise it for fewer such groups at the cost of
missed copies, lower it to catch heavier edits. The tiny random-weight test model is not
semantic: its embeddings are dominated by one common direction, so unrelated
pictures of similar overall colour score above 0.99 with it and no threshold meant for CLIP
separates copies from originals there (see ``tests/integration/test_duplicates.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from semstore.index.ivf import default_nlist
from semstore.index.ivf_index import IVFIndex
from semstore.index.lookup import as_id_array

if TYPE_CHECKING:
    from semstore.collection import Collection
    from semstore.index_service import SearchIndex

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_NEIGHBOURS",
    "DEFAULT_NPROBE",
    "DEFAULT_THRESHOLD",
    "IVF_ABOVE",
    "DuplicateGroup",
    "check_threshold",
    "find_duplicates",
    "group_pairs",
    "source_uris",
]

#: Cosine of two items' decoded embeddings from which they count as near-duplicates (see the
#: module docstring for what it means with a real CLIP model and the default codec).
DEFAULT_THRESHOLD = 0.90
#: Nearest items each item is compared with (besides itself).
DEFAULT_NEIGHBOURS = 10
#: Items decoded and searched at a time (their float vectors are the only ones held).
DEFAULT_BATCH = 512
#: Lists probed per item in an IVF index (its own or the temporary one).
DEFAULT_NPROBE = 8
#: Exhaustive indexes with more items than this are searched through a temporary IVF index.
IVF_ABOVE = 50_000
#: ADC candidates re-scored by exact cosine, per nearest item asked for.
RERANK_FACTOR = 2
#: Similarities are float32 sums: a pair this little below the threshold still counts (so a
#: threshold of 1.0 finds items with identical codes, whose cosine may come out as 0.99999994).
SCORE_TOLERANCE = 1e-6

#: Codes read at a time while filling the temporary IVF index.
_FILL_CHUNK = 65_536
_SAMPLE_SEED = 0


@dataclass(frozen=True)
class DuplicateGroup:
    """Items that are near-duplicates of each other (directly or through other members).

    ``ids`` are ascending. ``min_similarity`` / ``max_similarity`` are the lowest and highest
    decoded cosine among the pairs that joined the group (each >= the threshold, up to
    :data:`SCORE_TOLERANCE`); two members linked only through a third may be less similar
    than ``min_similarity``.
    """

    ids: tuple[int, ...]
    min_similarity: float
    max_similarity: float

    @property
    def size(self) -> int:
        """Number of items in the group (at least 2)."""
        return len(self.ids)


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float; ValueError unless it is a number in (0, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")  # noqa: TRY004 - one error type for callers
    value = float(threshold)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ValueError(f"threshold must be in (0, 1] (a cosine similarity), got {threshold!r}")
    return value


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def find_duplicates(
    index: SearchIndex,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    neighbours: int = DEFAULT_NEIGHBOURS,
    batch: int = DEFAULT_BATCH,
    nprobe: int | None = None,
    ivf_above: int = IVF_ABOVE,
    progress: bool = False,
) -> list[DuplicateGroup]:
    """Groups of items of ``index`` whose decoded embeddings have cosine >= ``threshold``.

    ``index`` is any index with ``ids()``, ``codes_for(ids)``, ``codec`` and
    ``search(queries, k, rerank=R)`` returning cosine scores (:class:`~semstore.index.ADCIndex`,
    :class:`~semstore.index.ivf_index.IVFIndex`); it is only read. Each item is compared with
    its ``neighbours`` nearest items, ``batch`` items at a time; an IVF index probes
    ``nprobe`` lists per item (default :data:`DEFAULT_NPROBE`), and an exhaustive index of
    more than ``ivf_above`` items is searched through a temporary IVF index (see the module
    docstring for cost and recall). ``progress`` shows a tqdm bar on stderr.

    Returns the groups of two or more items, each with ascending ids, ordered by their
    smallest id. Raises ValueError for a threshold outside (0, 1] or counts below 1.
    """
    threshold = check_threshold(threshold)
    neighbours = _check_count("neighbours", neighbours, 1)
    batch = _check_count("batch", batch, 1)
    probe = DEFAULT_NPROBE if nprobe is None else _check_count("nprobe", nprobe, 1)
    ivf_above = _check_count("ivf_above", ivf_above, 0)
    ids = np.sort(as_id_array(index.ids()))
    if len(ids) < 2:
        return []
    search = _searcher(index, ids, probe, ivf_above)
    left, right, similarity = _similar_pairs(index, search, ids, threshold, neighbours, batch, progress)
    return group_pairs(left, right, similarity)


Search = Callable[[np.ndarray, int, int], tuple[np.ndarray, np.ndarray]]


def _searcher(index: SearchIndex, ids: np.ndarray, nprobe: int, ivf_above: int) -> Search:
    """``search(vectors, k, rerank)`` over the index itself or a temporary IVF copy of it."""
    if isinstance(index, IVFIndex):
        return lambda vectors, k, rerank: index.search(vectors, k, rerank=rerank, nprobe=nprobe)
    codec = index.codec
    if len(ids) > ivf_above and codec.codebook_size > 16:
        temporary = _temporary_ivf(index, ids, nprobe)
        return lambda vectors, k, rerank: temporary.search(vectors, k, rerank=rerank)
    return lambda vectors, k, rerank: index.search(vectors, k, rerank=rerank)


def _temporary_ivf(index: SearchIndex, ids: np.ndarray, nprobe: int) -> IVFIndex:
    """An IVFIndex over the same codes (``default_nlist(N)`` lists), filled chunk by chunk."""
    codec = index.codec
    nlist = default_nlist(len(ids))
    sample_size = min(len(ids), max(_FILL_CHUNK, 40 * nlist))
    rng = np.random.default_rng(_SAMPLE_SEED)
    sample = np.sort(rng.choice(ids, sample_size, replace=False)) if sample_size < len(ids) else ids
    temporary = IVFIndex.empty(codec, _present_codes(index, sample)[1], nlist=nlist, nprobe=nprobe)
    for start in range(0, len(ids), _FILL_CHUNK):
        temporary.add(*_present_codes(index, ids[start : start + _FILL_CHUNK]))
    return temporary


def _similar_pairs(
    index: SearchIndex, search: Search, ids: np.ndarray, threshold: float, neighbours: int, batch: int, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (smaller id, larger id, similarity) found at >= threshold, each pair once."""
    codec = index.codec
    k = min(neighbours + 1, len(ids))
    rerank = RERANK_FACTOR * k
    floor = threshold - SCORE_TOLERANCE
    lefts, rights, scores = [], [], []
    with tqdm(total=len(ids), desc="duplicates", unit="item", disable=not progress, leave=False) as bar:
        for start in range(0, len(ids), batch):
            queries, codes = _present_codes(index, ids[start : start + batch])
            bar.update(min(batch, len(ids) - start))
            if len(queries) == 0:
                continue
            vectors = codec.refined_decode(codes, normalize=True)
            found_scores, found = search(vectors, k, rerank)
            del vectors
            query = np.repeat(queries, found.shape[1])
            found, found_scores = found.ravel(), found_scores.ravel()
            keep = (found >= 0) & (found != query) & (found_scores >= floor)
            lefts.append(np.minimum(query[keep], found[keep]))
            rights.append(np.maximum(query[keep], found[keep]))
            scores.append(found_scores[keep].astype(np.float32))
    if not lefts:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float32)
    return _unique_pairs(np.concatenate(lefts), np.concatenate(rights), np.concatenate(scores))


def _present_codes(index: SearchIndex, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` that are still in the index, and their codes (items deleted while the join runs
    are skipped; items added meanwhile are not compared)."""
    try:
        return ids, index.codes_for(ids)
    except KeyError:
        kept = np.intersect1d(ids, as_id_array(index.ids()))
        return kept, index.codes_for(kept)


def _unique_pairs(left: np.ndarray, right: np.ndarray, similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (left, right) pair once, with its highest similarity (a pair found from both sides
    may differ in the last float32 bit)."""
    if len(left) == 0:
        return left, right, similarity
    order = np.lexsort((-similarity, right, left))
    left, right, similarity = left[order], right[order], similarity[order]
    first = np.ones(len(left), dtype=bool)
    first[1:] = (left[1:] != left[:-1]) | (right[1:] != right[:-1])
    return left[first], right[first], similarity[first]


def group_pairs(left: Any, right: Any, similarity: Any) -> list[DuplicateGroup]:
    """Union-find over similar pairs ``(left[i], right[i])`` with their ``similarity[i]``.

    Returns the connected groups (two or more distinct ids), ids ascending, ordered by smallest
    id; each group's min / max similarity are over the pairs inside it. A pair of an id with
    itself joins nothing. Raises ValueError when the three sequences differ in length.
    """
    a, b = as_id_array(left, "left"), as_id_array(right, "right")
    scores = np.asarray(similarity, dtype=np.float64).reshape(-1)
    if not len(a) == len(b) == len(scores):
        raise ValueError(f"left, right and similarity differ in length: {len(a)}, {len(b)}, {len(scores)}")
    distinct = a != b
    a, b, scores = a[distinct], b[distinct], scores[distinct]
    if len(a) == 0:
        return []
    nodes = np.unique(np.concatenate([a, b]))
    roots = _union_find(len(nodes), np.searchsorted(nodes, a), np.searchsorted(nodes, b))
    return _groups(nodes, roots, roots[np.searchsorted(nodes, a)], scores)


def _union_find(count: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The root of each of ``count`` nodes after joining ``a[i]`` with ``b[i]``: the smallest
    node of its component (union by smaller index, path halving)."""
    parent = list(range(count))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = find(x), find(y)
        if rx != ry:
            if rx < ry:
                parent[ry] = rx
            else:
                parent[rx] = ry
    return np.fromiter((find(x) for x in range(count)), dtype=np.int64, count=count)


def _groups(nodes: np.ndarray, roots: np.ndarray, pair_roots: np.ndarray, scores: np.ndarray) -> list[DuplicateGroup]:
    """DuplicateGroups from each node's root and each pair's root (roots are the smallest
    node of their component, and nodes are ascending: sorting by root orders by smallest id)."""
    order = np.argsort(roots, kind="stable")
    member_roots = roots[order]
    starts = np.flatnonzero(np.r_[True, member_roots[1:] != member_roots[:-1]])
    pair_order = np.argsort(pair_roots, kind="stable")
    sorted_pair_roots, sorted_scores = pair_roots[pair_order], scores[pair_order]
    pair_starts = np.flatnonzero(np.r_[True, sorted_pair_roots[1:] != sorted_pair_roots[:-1]])
    lows = np.minimum.reduceat(sorted_scores, pair_starts)
    highs = np.maximum.reduceat(sorted_scores, pair_starts)
    by_root = dict(zip(sorted_pair_roots[pair_starts].tolist(), zip(lows.tolist(), highs.tolist())))
    groups = []
    for root, members in zip(member_roots[starts].tolist(), np.split(nodes[order], starts[1:])):
        low, high = by_root[root]
        groups.append(DuplicateGroup(tuple(int(i) for i in members), float(low), float(high)))
    return groups


def source_uris(collection: Collection, ids: Sequence[int]) -> dict[int, str]:
    """The source URI of each of ``ids`` that is still in ``collection`` (one query per chunk of ids)."""
    from semstore import storage
    from semstore.validation import readable

    with collection.database.sessions() as session:
        items = storage.get_items(session, collection_id=collection.id, ids=[int(i) for i in ids])
        return {int(item.id): readable(item.source_uri) for item in items}
