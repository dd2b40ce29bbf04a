"""ADCIndex: FAISS asymmetric-distance search over a PQ-VAE codec's shared codebook.

A query ``q`` is turned into M sub-queries by ``codec.query_transform``; FAISS scores an
item with codes ``c`` as ``sum_m <q'_m, codebook[c_m]>`` (look-up tables over the one shared
codebook) and the index adds ``codec.query_offset(q)``, so every ADC score equals
``<q, codec.decode(c, normalize=False)>``. Codes go into FAISS as codes, never re-encoded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from semstore.codec import PQVAECodec
from semstore.index.errors import IndexCorruptError, IndexLoadError, IndexStaleError
from semstore.index.layouts import LAYOUTS, Layout, centroids_match, choose_layout, code_bits
from semstore.index.locking import ReadWriteLock
from semstore.index.lookup import IdLookup, as_id_array, unique_sorted
from semstore.index.persistence import IndexVersion, read_index_dir, write_index_dir
from semstore.index.store import CodeStore, search_padded

logger = logging.getLogger(__name__)

CodesLoader = Callable[[], tuple[Any, Any]]

#: Up to this many allowed items, a filtered search scores them by gathering look-up-table
#: entries; above it their codes are copied into a temporary exact FAISS index.
GATHER_SUBSET_MAX = 65_536


class ADCIndex:
    """Item ids and their codes in a FAISS index over the codec's shared codebook.

    ``layout`` is ``"fastscan"`` (4-bit SIMD scan, the default when K == 16) or ``"pq"``
    (exact IndexPQ, the default otherwise). Fast-scan ranks with 8-bit quantised tables, so it
    fetches ``fastscan_refine * depth`` candidates and re-scores them with exact float tables:
    returned scores are exact ADC scores in both layouts.

    Thread-safe: searches (and saves) run concurrently, FAISS releasing the GIL; add and
    remove wait for running searches, then run alone.

    >>> import numpy as np
    >>> from semstore.codec import PQVAECodec
    >>> x = np.random.default_rng(0).standard_normal((300, 16)).astype("float32")
    >>> codec = PQVAECodec(dim=16, num_subvectors=4, codebook_size=64, iterations=1).fit(x, progress=False)
    >>> index = ADCIndex.build(codec, np.arange(300) + 1, codec.encode(x))
    >>> scores, ids = index.search(x[:2], k=3)
    >>> scores.shape, ids.dtype.name, len(index)
    ((2, 3), 'int64', 300)
    """

    def __init__(self, codec: PQVAECodec, *, layout: str | None = None, fastscan_refine: int = 2) -> None:
        """An empty index for ``codec``; ``layout`` overrides the automatic choice."""
        chosen = choose_layout(codec.codebook_size, layout)
        self._setup(codec, CodeStore(codec.codebook, codec.num_subvectors, chosen), fastscan_refine)

    #: The version an index read by :meth:`load` was saved with (None for a new index).
    saved_version: IndexVersion | None = None

    def _setup(self, codec: PQVAECodec, store: CodeStore, fastscan_refine: int) -> None:
        if fastscan_refine < 1:
            raise ValueError(f"fastscan_refine must be >= 1, got {fastscan_refine}")
        self._codec = codec
        self._codec_hash = codec.content_hash
        self._store = store
        self._lookup = IdLookup(store.ids_view(), store.ids_view)
        self._lock = ReadWriteLock()
        self._save_lock = threading.Lock()  # saves share the read lock but not the directory
        self._refine = int(fastscan_refine)
        # Exact re-scoring reads one flat (M*K) table per query: code c_m of sub-vector m
        # sits at m*K + c_m.
        self._codebook_t = np.ascontiguousarray(codec.codebook.T)
        self._table_offsets = np.arange(codec.num_subvectors, dtype=np.int64) * codec.codebook_size

    # -- description ---------------------------------------------------------------------
    @property
    def codec(self) -> PQVAECodec:
        return self._codec

    @property
    def layout(self) -> Layout:
        """``"pq"`` (IndexPQ) or ``"fastscan"`` (IndexPQFastScan)."""
        return self._store.layout

    @property
    def nbits(self) -> int:
        """Bits FAISS stores per code (``ceil(log2 K)``; 4 for fast-scan)."""
        return self._store.nbits

    @property
    def ntotal(self) -> int:
        """Number of items."""
        return self._store.ntotal

    def __len__(self) -> int:
        return self.ntotal

    @property
    def memory_bytes(self) -> int:
        """Estimated memory of the items: FAISS code buffer + id map + id lookup.

        The lookup costs nothing while ids were added in increasing order, else 16 B/item.

        Excludes fixed costs (the M copies of the codebook in FAISS's centroid tables).
        """
        with self._lock.read():
            return self._store.code_bytes() + 8 * self._store.ntotal + self._lookup.nbytes

    @property
    def bytes_per_item(self) -> float:
        """:attr:`memory_bytes` per item (the per-item estimate when empty)."""
        count = self.ntotal
        if count == 0:
            return float(self._store.row_bytes + 8)
        return self.memory_bytes / count

    def ids(self) -> np.ndarray:
        """All item ids (int64), in storage order."""
        with self._lock.read():
            return self._store.ids_view().copy()

    def current_version(self, revision: int = 0) -> IndexVersion:
        """The version describing this index's content (``max_id`` 0 when empty)."""
        with self._lock.read():
            ids = self._lookup.sorted_ids
            return IndexVersion(self._codec_hash, len(ids), int(ids[-1]) if len(ids) else 0, revision)

    def __repr__(self) -> str:
        return (
            f"ADCIndex(layout={self.layout!r}, ntotal={self.ntotal}, M={self._codec.num_subvectors}, "
            f"K={self._codec.codebook_size}, codec={self._codec_hash[:12]})"
        )

    # -- mutation ------------------------------------------------------------------------
    def add(self, ids: Any, codes: Any, *, skip_present: bool = False) -> int:
        """Add items: ``ids`` (n,) int64 >= 0, ``codes`` (n, M) integers in [0, K); returns how many.

        All or nothing: raises ValueError for invalid codes, ids repeated in the batch or
        ids already in the index, and then adds none of them. With ``skip_present`` ids
        already in the index are left out instead (applying a change twice is harmless).
        """
        id_array = as_id_array(ids)
        code_array = self._codec.validate_codes(codes) if len(id_array) else np.asarray(codes)
        if len(id_array) == 0:
            if np.size(code_array):
                raise ValueError("got codes but no ids")
            return 0
        if len(code_array) != len(id_array):
            raise ValueError(f"{len(id_array)} ids but {len(code_array)} code rows")
        if id_array.min() < 0:
            raise ValueError("ids must be >= 0 (FAISS uses -1 for 'no result')")
        unique = unique_sorted(id_array)
        if len(unique) != len(id_array):
            raise ValueError(f"{len(id_array) - len(unique)} ids are repeated within the batch")
        with self._lock.write():
            present, _ = self._lookup.find(id_array)
            if present.any():
                if not skip_present:
                    sample = id_array[present][:5].tolist()
                    raise ValueError(f"{int(present.sum())} ids are already in the index, e.g. {sample}")
                id_array, code_array = id_array[~present], code_array[~present]
                if len(id_array) == 0:
                    return 0
            start = self._store.ntotal
            self._store.append(id_array, code_array)
            self._lookup.appended(id_array, start)
            return len(id_array)

    def remove(self, ids: Any) -> int:
        """Remove the items with these ids; unknown ids are ignored. Returns the count removed."""
        wanted = unique_sorted(as_id_array(ids))
        with self._lock.write():
            present, _ = self._lookup.find(wanted)
            gone = wanted[present]
            if len(gone) == 0:
                return 0
            removed = self._store.remove(gone)
            if removed != len(gone):  # cannot happen unless FAISS and the lookup disagree
                self._lookup = IdLookup(self._store.ids_view(), self._store.ids_view)
                raise RuntimeError(f"FAISS removed {removed} items, expected {len(gone)}")
            self._lookup.removed(gone)
            return removed

    # -- reading -------------------------------------------------------------------------
    def codes_for(self, ids: Any) -> np.ndarray:
        """Codes (n, M) of ``ids`` in the given order, read from FAISS's code buffer.

        Raises KeyError naming ids that are not in the index.
        """
        wanted = as_id_array(ids)
        with self._lock.read():
            present, positions = self._lookup.find(wanted)
            if not present.all():
                raise KeyError(f"ids not in the index: {wanted[~present][:10].tolist()}")
            codes = self._store.read_codes(positions)
        return codes.astype(self._codec.code_dtype)

    def search(
        self,
        queries: Any,
        k: int,
        *,
        rerank: int | None = None,
        allowed_ids: Any | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` items per query: (scores (nq, k) float32, ids (nq, k) int64).

        Scores are ADC scores ``<q, decode(codes, normalize=False)>``. With ``rerank=R`` the
        best ``max(R, k)`` ADC candidates are decoded (L2-normalised) and re-scored by exact
        cosine with the normalised query. ``allowed_ids`` restricts the search to those ids
        (unknown ids are ignored). Missing results have id -1 and score -inf.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if rerank is not None and (isinstance(rerank, bool) or not isinstance(rerank, (int, np.integer)) or rerank < 1):
            raise ValueError(f"rerank must be a positive integer or None, got {rerank!r}")
        k = int(k)
        shape = np.shape(queries)
        if len(shape) == 2 and shape[0] == 0 and shape[1] == self._codec.dim:
            return np.empty((0, k), dtype=np.float32), np.empty((0, k), dtype=np.int64)
        sub, offset = self._codec.query_parts(queries)
        allowed = None if allowed_ids is None else unique_sorted(as_id_array(allowed_ids, "allowed_ids"))
        depth = k if rerank is None else max(int(rerank), k)
        with self._lock.read():
            if allowed is not None:
                scores, positions = self._search_subset(sub, depth, allowed)
            elif self.layout == "fastscan":
                scores, positions = self._search_fastscan(sub, depth)
            else:
                scores, positions = self._store.scan(sub, depth)
            scores += offset[:, None]
            if rerank is not None:
                scores, positions = self._rerank(queries, scores, positions, k)
            ids = self._ids_at(positions)
        return np.ascontiguousarray(scores, dtype=np.float32), ids

    def _ids_at(self, positions: np.ndarray) -> np.ndarray:
        ids = np.full(positions.shape, -1, dtype=np.int64)
        valid = positions >= 0
        ids[valid] = self._store.ids_view()[positions[valid]]
        return ids

    def _search_subset(self, sub: np.ndarray, depth: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        present, positions = self._lookup.find(allowed)
        positions = np.sort(positions[present])
        nq = sub.shape[0]
        if len(positions) <= GATHER_SUBSET_MAX:
            # Few items: score them straight from the look-up tables (exact ADC, no copy).
            grid = np.broadcast_to(positions, (nq, len(positions)))
            scores, best = top_k_columns(self._exact_scores(sub, grid), np.array(grid), min(depth, len(positions)))
            if best.shape[1] < depth:
                pad = depth - best.shape[1]
                scores = np.hstack([scores, np.full((nq, pad), -np.inf, dtype=scores.dtype)])
                best = np.hstack([best, np.full((nq, pad), -1, dtype=np.int64)])
            return scores, best
        # IndexPQ and IndexPQFastScan both refuse FAISS's IDSelector search parameters, so
        # many allowed items' codes are copied into an exact IndexPQ (in storage order).
        scores, local = search_padded(self._store.subset_index(positions), sub, depth)
        mapped = positions[np.maximum(local, 0)] if len(positions) else np.zeros_like(local)
        return scores, np.where(local >= 0, mapped, -1)

    def _search_fastscan(self, sub: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        _, candidates = self._store.scan(sub, depth * self._refine)
        return top_k_columns(self._exact_scores(sub, candidates), candidates, depth)

    def _exact_scores(self, sub: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Float look-up-table sums ``sum_m <q'_m, codebook[c_m]>`` of the items at ``positions``."""
        nq, width = positions.shape
        m = self._codec.num_subvectors
        # one 2-D product (nq*M, d) x (d, K): much cheaper than M stacked small products
        tables = (sub.reshape(nq * m, -1) @ self._codebook_t).reshape(nq, -1)  # (nq, M*K)
        valid = positions >= 0
        if valid.all():  # the usual case: one gather per query row
            slots = self._store.read_codes(positions.ravel()) + self._table_offsets
            if nq == 1:
                return tables[0][slots].sum(axis=1)[None, :]
            return np.take_along_axis(tables, slots.reshape(nq, width * m), axis=1).reshape(nq, width, m).sum(axis=2)
        rows = np.nonzero(valid)[0]
        slots = self._store.read_codes(positions[valid]) + self._table_offsets
        scores = np.full(positions.shape, -np.inf, dtype=np.float32)
        scores[valid] = tables[rows[:, None], slots].sum(axis=1)
        return scores

    def _rerank(
        self, queries: Any, scores: np.ndarray, positions: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        unit = np.asarray(queries, dtype=np.float32).reshape(positions.shape[0], -1)
        unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        valid = positions >= 0
        decoded = self._codec.refined_decode(self._store.read_codes(positions[valid]), normalize=True)
        cosine = np.full(positions.shape, -np.inf, dtype=np.float32)
        cosine[valid] = np.einsum("nd,nd->n", decoded, unit[np.nonzero(valid)[0]])
        return top_k_columns(cosine, positions, k)

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path, version: IndexVersion) -> Path:
        """Save to ``directory`` (``index-<n>.faiss`` + ``config.json``, crash-safe).

        ``version`` must name this index's codec and item count. Returns the index file path.
        """
        if version.codec_hash != self._codec_hash:
            raise ValueError(f"version names codec {version.codec_hash[:12]}, the index uses {self._codec_hash[:12]}")
        meta = {
            "layout": self.layout,
            "nbits": self.nbits,
            "num_subvectors": self._codec.num_subvectors,
            "codebook_size": self._codec.codebook_size,
            "subvector_dim": self._codec.subvector_dim,
        }
        with self._save_lock:
            with self._lock.read():
                if version.count != self._store.ntotal:
                    raise ValueError(f"version says {version.count} items, the index holds {self._store.ntotal}")
                # Serialised in memory under the read lock (a copy at memory speed); the slow
                # part, writing and fsyncing the file, runs after it, so a waiting add (and the
                # searches queued behind that writer) never waits for the disk.
                serialized = faiss.serialize_index(self._store.index)
            return write_index_dir(directory, serialized, version, meta)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        codec: PQVAECodec,
        expected: IndexVersion | None = None,
        *,
        layout: str | None = None,
        fastscan_refine: int = 2,
    ) -> "ADCIndex":
        """Load an index saved by :meth:`save`, verified against ``codec`` and ``expected``.

        Raises :class:`IndexNotFoundError`, :class:`IndexStaleError` (other codec, version or
        requested ``layout``) or :class:`IndexCorruptError`; never returns a wrong index.
        """
        index, version, config = read_index_dir(directory, codec.content_hash, expected)
        saved = config.get("layout")
        if saved not in LAYOUTS:
            raise IndexCorruptError(f"index in {directory} has an unknown layout {saved!r}")
        if layout is not None and choose_layout(codec.codebook_size, layout) != saved:
            raise IndexStaleError(f"index in {directory} has layout {saved!r}, {layout!r} was requested")
        store = _checked_store(index, codec, saved, directory)
        self = cls.__new__(cls)
        self._setup(codec, store, fastscan_refine)
        ids = self._lookup.sorted_ids
        if self._lookup.has_duplicates() or (len(ids) and ids[0] < 0):
            raise IndexCorruptError(f"index in {directory} holds duplicate or negative ids")
        if version.count != len(ids):
            raise IndexCorruptError(f"index in {directory} holds {len(ids)} items, its config says {version.count}")
        self.saved_version = version
        return self

    @classmethod
    def build(cls, codec: PQVAECodec, ids: Any, codes: Any, *, layout: str | None = None) -> "ADCIndex":
        """A new index holding ``ids`` with ``codes`` (one bulk add)."""
        index = cls(codec, layout=layout)
        index.add(ids, codes)
        return index

    @classmethod
    def load_or_build(
        cls,
        directory: str | Path,
        codec: PQVAECodec,
        expected: IndexVersion | None,
        loader: CodesLoader,
        *,
        layout: str | None = None,
    ) -> tuple["ADCIndex", bool]:
        """Load the saved index if it is valid (and ``expected``), else rebuild and save it.

        ``loader()`` returns ``(ids, codes)`` of every item (read from the database). Returns
        ``(index, rebuilt)``. Raises ValueError when the loader's item count or the codec
        disagree with ``expected`` (the database changed meanwhile: nothing is saved).
        """
        try:
            return cls.load(directory, codec, expected, layout=layout), False
        except IndexLoadError as exc:
            logger.info("rebuilding the index in %s: %s", directory, exc)
        ids, codes = loader()
        index = cls.build(codec, ids, codes, layout=layout)
        version = expected if expected is not None else index.current_version()
        if version.codec_hash != codec.content_hash or version.count != index.ntotal:
            raise ValueError(
                f"rebuilt {index.ntotal} items with codec {codec.content_hash[:12]}, but the expected "
                f"version is {version}: the database changed while the index was rebuilt"
            )
        index.save(directory, version)
        return index, True


def top_k_columns(scores: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns per row, best first (stable among equal scores, except that which
    of several items tied at the k-th score is kept may differ)."""
    if scores.shape[0] == 1:  # a single query: plain indexing, no index grids to build
        row = -scores[0]
        if 4 * k < row.size:  # a partition first: 10^4 scores sort in 0.3 ms, partition in 0.05
            chosen = np.sort(np.argpartition(row, k - 1)[:k])
            order = chosen[np.argsort(row[chosen], kind="stable")]
        else:
            order = np.argsort(row, kind="stable")[:k]
        top_scores, top_positions = scores[:, order], positions[:, order]
    else:
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_scores = np.take_along_axis(scores, order, axis=1)
        top_positions = np.take_along_axis(positions, order, axis=1)
    top_positions[~np.isfinite(top_scores)] = -1
    return top_scores, top_positions


def _checked_store(index: faiss.Index, codec: PQVAECodec, layout: Layout, directory: str | Path) -> CodeStore:
    """Wrap a loaded FAISS index after checking it really is this codec's ADC index."""
    if not isinstance(index, faiss.IndexIDMap):
        raise IndexCorruptError(f"index in {directory} is a {type(index).__name__}, not an IndexIDMap")
    inner = faiss.downcast_index(index.index)
    wanted = faiss.IndexPQFastScan if layout == "fastscan" else faiss.IndexPQ
    if type(inner) is not wanted:
        raise IndexCorruptError(f"index in {directory} wraps a {type(inner).__name__}, layout {layout!r} needs {wanted.__name__}")
    m, width = codec.num_subvectors, codec.subvector_dim
    nbits = code_bits(codec.codebook_size, layout)
    if (
        inner.d != m * width
        or inner.pq.M != m
        or inner.pq.nbits != nbits
        or inner.metric_type != faiss.METRIC_INNER_PRODUCT
        or not centroids_match(inner.pq, codec.codebook, m, nbits)
        or index.id_map.size() != index.ntotal
        or inner.ntotal != index.ntotal
    ):
        raise IndexCorruptError(f"index in {directory} does not match the codec's code shape or codebook")
    return CodeStore(codec.codebook, m, layout, index=index)
