"""IVFIndex: the inverted-file index of the product path, with the same contract as ADCIndex.

Add, remove, search (with exact re-ranking from the codes and id filters), save and load:
what :class:`~semstore.index_service.IndexService` needs, so a collection can switch from the
exhaustive :class:`~semstore.index.ADCIndex` to this one once it is large.

One FAISS ``IndexIVFPQ`` (inner product, ``by_residual = False``) holds everything:

* its PQ centroids are the codec's shared codebook tiled M times, so a list entry is the
  item's stored code, never re-encoded; scores are exact ADC scores ``<q, decode(c)>``
  (``codec.query_parts`` supplies the sub-queries and the offset), as in ADCIndex;
* the coarse centroids live in the sub-query space (``c'`` with ``G c' = c``, see
  :mod:`semstore.index.ivf`); an item goes to the list whose embedding-space centroid ``c``
  has the largest inner product with its decoded vector;
* list entries are labelled with the item ids; a :class:`~semstore.index.code_table.SortedCodeTable`
  beside the lists finds any id's code (re-ranking, id-filtered scoring) by binary search.

Only the IndexPQ layout (codebooks of more than 16 codewords); 4-bit fast-scan codes scan
10^6 items in about a millisecond exhaustively.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from semstore.codec import PQVAECodec
from semstore.index.adc import top_k_columns
from semstore.index.code_table import SortedCodeTable
from semstore.index.errors import IndexCorruptError, IndexStaleError
from semstore.index.ivf import _assign, _coarse_centroids, default_nlist
from semstore.index.layouts import centroids_match, code_bits, pack_codes, shared_centroids, unpack_codes
from semstore.index.locking import ReadWriteLock
from semstore.index.lookup import as_id_array, unique_sorted
from semstore.index.persistence import IndexVersion, read_index_dir, write_index_dir

#: Lists probed per query unless the caller says otherwise.
DEFAULT_NPROBE = 32
_READ_CHUNK = 4096


class IVFIndex:
    """Item ids and codes in an IVF partition of the codec's ADC space (mutable, saved)."""

    kind = "ivf"
    saved_version: IndexVersion | None = None
    _owner: object = None

    def __init__(self, codec: PQVAECodec, ivf: faiss.IndexIVFPQ, *, nprobe: int = DEFAULT_NPROBE) -> None:
        """Wrap a FAISS IVF index prepared by :meth:`build` or :meth:`load`."""
        if codec.codebook_size <= 16:
            raise ValueError("IVFIndex takes codecs of more than 16 codewords (4-bit codes scan fast exhaustively)")
        self._codec = codec
        self._codec_hash = codec.content_hash
        self._ivf = ivf
        self._nbits = int(ivf.pq.nbits)
        self._coarse_bytes = int(ivf.coarse_code_size())
        self.nprobe = int(nprobe)
        # The embedding-space centroids, for assigning new items: G c' = c.
        sub_centroids = faiss.rev_swig_ptr(faiss.downcast_index(ivf.quantizer).get_xb(), ivf.nlist * ivf.d)
        self._assigner = faiss.IndexFlatIP(codec.dim)
        self._assigner.add(np.ascontiguousarray((codec.query_matrix @ sub_centroids.reshape(ivf.nlist, ivf.d).T).T, dtype=np.float32))
        self._table = SortedCodeTable(int(ivf.code_size), *self._list_entries())
        self._lock = ReadWriteLock()
        self._save_lock = threading.Lock()
        self._codebook_t = np.ascontiguousarray(codec.codebook.T)
        self._table_offsets = np.arange(codec.num_subvectors, dtype=np.int64) * codec.codebook_size

    # -- construction --------------------------------------------------------------------
    @classmethod
    def empty(cls, codec: PQVAECodec, sample_codes: np.ndarray, *, nlist: int, nprobe: int = DEFAULT_NPROBE, seed: int = 0) -> IVFIndex:
        """An empty index whose ``nlist`` lists are trained on ``sample_codes`` (n >= nlist)."""
        codes = codec.validate_codes(sample_codes)
        if not 1 <= nlist <= len(codes):
            raise ValueError(f"nlist must be in [1, {len(codes)}], got {nlist}")
        m, width = codec.num_subvectors, codec.subvector_dim
        nbits = code_bits(codec.codebook_size, "pq")
        # at least 40 points per list (FAISS warns below 39): 65,536 alone left 16 per list at nlist 4096
        centroids = _coarse_centroids(codec, codes, nlist, max(65_536, 40 * nlist), 10, seed)
        quantizer = faiss.IndexFlatIP(m * width)
        quantizer.add(np.ascontiguousarray(np.linalg.lstsq(codec.query_matrix, centroids.T, rcond=None)[0].T, dtype=np.float32))
        ivf = faiss.IndexIVFPQ(quantizer, m * width, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        ivf.own_fields = True
        quantizer.this.disown()  # the IVF index owns (and frees) its quantizer now
        ivf.by_residual = False
        faiss.copy_array_to_vector(shared_centroids(codec.codebook, m, nbits), ivf.pq.centroids)
        ivf.is_trained = True
        return cls(codec, ivf, nprobe=nprobe)

    @classmethod
    def build(cls, codec: PQVAECodec, ids: Any, codes: Any, *, nlist: int | None = None, nprobe: int = DEFAULT_NPROBE) -> IVFIndex:
        """An index of ``ids`` with ``codes``, ``nlist`` lists (default about sqrt(n))."""
        id_array, code_array = as_id_array(ids), codec.validate_codes(codes)
        if len(id_array) == 0:
            raise ValueError("an IVF index needs items to train its lists")
        index = cls.empty(codec, code_array, nlist=nlist or default_nlist(len(id_array)), nprobe=nprobe)
        index.add(id_array, code_array)
        return index

    # -- description ---------------------------------------------------------------------
    @property
    def codec(self) -> PQVAECodec:
        return self._codec

    @property
    def layout(self) -> str:
        return "ivf"

    @property
    def nlist(self) -> int:
        return int(self._ivf.nlist)

    @property
    def ntotal(self) -> int:
        return int(self._ivf.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def memory_bytes(self) -> int:
        """Memory of the items (list codes and ids, the sorted id/code table with its spare room)
        and of the lists themselves: FAISS's coarse quantizer (nlist x M*d floats, kept for the
        file format) and the embedding-space centroids that choose the lists."""
        lists = self.nlist * 4 * (int(self._ivf.d) + self._codec.dim)
        return self.ntotal * (int(self._ivf.code_size) + 8) + self._table.nbytes + lists

    @property
    def bytes_per_item(self) -> float:
        count = self.ntotal
        return self.memory_bytes / count if count else float(2 * int(self._ivf.code_size) + 16)

    def ids(self) -> np.ndarray:
        """All item ids, ascending."""
        with self._lock.read():
            return self._table.ids.copy()

    def current_version(self, revision: int = 0) -> IndexVersion:
        with self._lock.read():
            ids = self._table.ids
            return IndexVersion(self._codec_hash, len(ids), int(ids[-1]) if len(ids) else 0, revision)

    def __repr__(self) -> str:
        return f"IVFIndex(nlist={self.nlist}, nprobe={self.nprobe}, ntotal={self.ntotal}, M={self._codec.num_subvectors})"

    # -- mutation ------------------------------------------------------------------------
    def add(self, ids: Any, codes: Any, *, skip_present: bool = False) -> int:
        """Add items (as :meth:`ADCIndex.add`); returns how many were added."""
        id_array = as_id_array(ids)
        if len(id_array) == 0:
            return 0
        code_array = self._codec.validate_codes(codes)
        if len(code_array) != len(id_array):
            raise ValueError(f"{len(id_array)} ids but {len(code_array)} code rows")
        if id_array.min() < 0:
            raise ValueError("ids must be >= 0 (FAISS uses -1 for 'no result')")
        if len(unique_sorted(id_array)) != len(id_array):
            raise ValueError(f"{len(id_array) - len(unique_sorted(id_array))} ids are repeated within the batch")
        lists = _assign(self._codec, self._assigner, code_array)
        with self._lock.write():
            present = self._table.contains(id_array)
            if present.any():
                if not skip_present:
                    raise ValueError(f"{int(present.sum())} ids are already in the index, e.g. {id_array[present][:5].tolist()}")
                id_array, code_array, lists = id_array[~present], code_array[~present], lists[~present]
                if len(id_array) == 0:
                    return 0
            entries = np.zeros((len(id_array), self._coarse_bytes + int(self._ivf.code_size)), dtype=np.uint8)
            entries[:, : self._coarse_bytes] = lists.astype("<u8").view(np.uint8).reshape(-1, 8)[:, : self._coarse_bytes]
            packed = pack_codes(code_array, self._nbits)
            entries[:, self._coarse_bytes :] = packed
            self._ivf.add_sa_codes(np.ascontiguousarray(entries), np.ascontiguousarray(id_array))
            self._table.add(id_array, packed)
            return len(id_array)

    def remove(self, ids: Any) -> int:
        """Remove the items with these ids; unknown ids are ignored. Returns the count removed."""
        wanted = unique_sorted(as_id_array(ids))
        with self._lock.write():
            gone = np.ascontiguousarray(wanted[self._table.contains(wanted)])
            if len(gone) == 0:
                return 0
            # (a hashed selector: without a direct map FAISS tests every list entry against it)
            removed = int(self._ivf.remove_ids(faiss.IDSelectorBatch(gone)))
            self._table.remove(gone)
            if removed != len(gone):
                raise RuntimeError(f"FAISS removed {removed} items, expected {len(gone)}")
            return removed

    # -- reading -------------------------------------------------------------------------
    def codes_for(self, ids: Any) -> np.ndarray:
        """Codes (n, M) of ``ids`` in the given order; KeyError naming ids not in the index."""
        wanted = as_id_array(ids)
        with self._lock.read():
            present, rows = self._table.find(wanted)
            if not present.all():
                raise KeyError(f"ids not in the index: {wanted[~present][:10].tolist()}")
            return self._unpacked(self._table.rows_at(rows))

    def _codes_unlocked(self, ids: np.ndarray) -> np.ndarray:
        return self._unpacked(self._table.rows(ids))

    def _unpacked(self, rows: np.ndarray) -> np.ndarray:
        return unpack_codes(rows, self._codec.num_subvectors, self._nbits).astype(self._codec.code_dtype)

    def search(
        self, queries: Any, k: int, *, rerank: int | None = None, allowed_ids: Any | None = None, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per query among the ``nprobe`` best lists (as :meth:`ADCIndex.search`).

        With ``allowed_ids`` every allowed item is scored (exact, whatever its list).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        probe = self.nprobe if nprobe is None else int(nprobe)
        if probe < 1:
            raise ValueError(f"nprobe must be positive, got {nprobe!r}")
        k = int(k)
        depth = k if rerank is None else max(int(rerank), k)
        sub, offset = self._codec.query_parts(queries)
        with self._lock.read():
            if allowed_ids is not None:
                allowed = unique_sorted(as_id_array(allowed_ids, "allowed_ids"))
                present, rows = self._table.find(allowed)
                scores, ids = self._score_all(sub, allowed[present], rows[present], depth)
            else:
                # The lists are chosen in the embedding space (<q, c> = <G^T q, c'>: the same
                # lists): the FAISS quantizer holds c' in the M*d sub-query space, 8x wider at
                # the default codec, which cost 2.6 ms per query at nlist 4096.
                probe = min(probe, self.nlist)
                embedded = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(sub.shape[0], -1))
                coarse_scores, lists = self._assigner.search(embedded, probe)
                scores, ids = self._search_lists(sub, depth, lists, coarse_scores)
            scores = scores + offset[:, None]
            if rerank is not None:
                scores, ids = self._rerank(queries, ids, k)
            elif scores.shape[1] > k:
                scores, ids = scores[:, :k], ids[:, :k]
        return np.ascontiguousarray(scores, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)

    def _search_lists(
        self, sub: np.ndarray, depth: int, lists: np.ndarray, coarse_scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's scan of the given lists: the C++ ``search_preassigned`` (its Python wrapper
        takes no per-call parameters, and ``nprobe`` on the shared index would race)."""
        nq, probe = lists.shape
        scores = np.empty((nq, depth), dtype=np.float32)
        ids = np.empty((nq, depth), dtype=np.int64)
        lists = np.ascontiguousarray(lists, dtype=np.int64)
        coarse_scores = np.ascontiguousarray(coarse_scores, dtype=np.float32)
        params = faiss.SearchParametersIVF(nprobe=probe)
        self._ivf.search_preassigned_c(
            nq, faiss.swig_ptr(sub), depth, faiss.swig_ptr(lists), faiss.swig_ptr(coarse_scores),
            faiss.swig_ptr(scores), faiss.swig_ptr(ids), False, params,
        )  # fmt: skip
        scores[ids < 0] = -np.inf
        return scores, ids

    def _score_all(self, sub: np.ndarray, allowed: np.ndarray, rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact ADC scores of the ``allowed`` items (their table ``rows``), the best ``depth`` per query."""
        nq, m = sub.shape[0], self._codec.num_subvectors
        scores = np.full((nq, depth), -np.inf, dtype=np.float32)
        ids = np.full((nq, depth), -1, dtype=np.int64)
        if len(allowed) == 0:
            return scores, ids
        tables = (sub.reshape(nq * m, -1) @ self._codebook_t).reshape(nq, -1)
        codes = unpack_codes(self._table.rows_at(rows), m, self._nbits)
        slots = codes + self._table_offsets
        sums = np.stack([tables[row][slots].sum(axis=1) for row in range(nq)])
        found = min(depth, len(allowed))
        top_scores, top_rows = top_k_columns(sums, np.broadcast_to(np.arange(len(allowed)), sums.shape), found)
        scores[:, :found] = top_scores
        ids[:, :found] = np.where(top_rows >= 0, allowed[np.maximum(top_rows, 0)], -1)
        return scores, ids

    def _rerank(self, queries: Any, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        unit = np.asarray(queries, dtype=np.float32).reshape(ids.shape[0], -1)
        unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        valid = ids >= 0
        cosine = np.full(ids.shape, -np.inf, dtype=np.float32)
        if valid.any():
            decoded = self._codec.refined_decode(self._codes_unlocked(ids[valid]), normalize=True)
            cosine[valid] = np.einsum("nd,nd->n", decoded, unit[np.nonzero(valid)[0]])
        order = np.argsort(-cosine, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(cosine, order, axis=1)
        chosen = np.take_along_axis(ids, order, axis=1)
        chosen[~np.isfinite(top)] = -1
        return top, chosen

    def _list_entries(self) -> tuple[np.ndarray, np.ndarray]:
        """Every list entry's (id, packed code), in list order."""
        lists, size = self._ivf.invlists, int(self._ivf.code_size)
        ids, rows = [], []
        for n in range(self.nlist):
            count = lists.list_size(n)
            if count:
                ids.append(faiss.rev_swig_ptr(lists.get_ids(n), count).copy())
                rows.append(faiss.rev_swig_ptr(lists.get_codes(n), count * size).copy().reshape(count, size))
        if not ids:
            return np.empty(0, dtype=np.int64), np.empty((0, size), dtype=np.uint8)
        return np.concatenate(ids).astype(np.int64), np.concatenate(rows)

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path, version: IndexVersion) -> Path:
        """Save to ``directory`` (the same crash-safe layout as ADCIndex, ``kind: ivf`` in its config)."""
        if version.codec_hash != self._codec_hash:
            raise ValueError(f"version names codec {version.codec_hash[:12]}, the index uses {self._codec_hash[:12]}")
        meta = {"layout": "ivf", "nlist": self.nlist, "nprobe": self.nprobe, "nbits": self._nbits,
                "num_subvectors": self._codec.num_subvectors, "codebook_size": self._codec.codebook_size}  # fmt: skip
        with self._save_lock:
            with self._lock.read():
                if version.count != self.ntotal:
                    raise ValueError(f"version says {version.count} items, the index holds {self.ntotal}")
                # Serialised in memory under the read lock (a copy at memory speed); the slow
                # part, writing and fsyncing the file, runs after it, so a waiting add (and the
                # searches queued behind that writer) never waits for the disk.
                serialized = faiss.serialize_index(self._ivf)
            return write_index_dir(directory, serialized, version, meta)

    @classmethod
    def load(cls, directory: str | Path, codec: PQVAECodec, expected: IndexVersion | None = None, *, nprobe: int | None = None) -> IVFIndex:
        """Load an index saved by :meth:`save`, verified against ``codec`` (IndexLoadError otherwise)."""
        loaded, version, config = read_index_dir(directory, codec.content_hash, expected)
        if config.get("layout") != "ivf":
            raise IndexStaleError(f"index in {directory} is not an IVF index")
        ivf = faiss.downcast_index(loaded)
        if not isinstance(ivf, faiss.IndexIVFPQ) or ivf.by_residual or ivf.pq.M != codec.num_subvectors:
            raise IndexCorruptError(f"index in {directory} is not this codec's IVF index")
        if not centroids_match(ivf.pq, codec.codebook, codec.num_subvectors, int(ivf.pq.nbits)):
            raise IndexCorruptError(f"index in {directory} holds another codebook")
        ivf.set_direct_map_type(faiss.DirectMap.NoMap)  # files saved before kept a hash-table map: not needed
        index = cls(codec, ivf, nprobe=nprobe or int(config.get("nprobe", DEFAULT_NPROBE)))
        index._owner = loaded  # the downcast wrapper does not own the C++ object: keep its owner alive
        if len(index._table) != version.count or index._table.has_duplicates():
            raise IndexCorruptError(f"index in {directory} holds {len(index._table)} items, its config says {version.count}")
        index.saved_version = version
        return index

