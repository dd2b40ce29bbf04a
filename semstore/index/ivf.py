"""IVFADCIndex: an inverted-file (IVF) coarse partition over a PQ-VAE codec's stored codes.

For sub-linear search past 10^6 items. The codes stay exactly the stored codes:

* coarse centroids are spherical k-means centroids of a sample of the items' decoded vectors
  (``codec.decode(codes, normalize=False)`` minus the codec mean, in embedding space), and each
  item goes to the list whose centroid has the largest inner product with its decoded vector;
* FAISS only ever sees the sub-queries ``q' = q G`` (``G``: the codec's linear query
  transform), so each centroid ``c`` is stored as the least-squares ``c'`` with ``G c' = c``:
  then ``<q', c'> = <q, c>``, the centroid's score for the query;
* the lists hold the item's own codes, with no residual encoding (``by_residual = False``);
* K <= 16: FAISS ``IndexIVFPQFastScan`` (4-bit SIMD scan with quantised tables) ranks
  ``refine * k`` candidates and an ``IndexRefine`` re-scores them exactly from a flat copy of
  the codes (a 4-bit IndexPQ); K > 16: ``IndexIVFPQ`` with exact float tables.

Returned scores are exact ADC scores ``<q, decode(c, normalize=False)>``, as in
:class:`~semstore.index.ADCIndex`. The index is built once from all items (no add, remove or
save): it is an optional accelerator, not the default search path.
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

from semstore.codec import PQVAECodec
from semstore.index.layouts import (
    FASTSCAN_BLOCK,
    choose_layout,
    code_bits,
    code_size,
    new_pq_index,
    pack_codes,
    shared_centroids,
    unpack_codes,
)
from semstore.index.lookup import IdLookup, as_id_array, unique_sorted
from semstore.index.store import search_padded

_ASSIGN_CHUNK = 65_536


def default_nlist(count: int) -> int:
    """About ``sqrt(count)`` lists, a power of two (at least 1)."""
    if count < 4:
        return 1
    return 1 << round(math.log2(math.sqrt(count)))


class IVFADCIndex:
    """Item ids and their codes in an IVF partition of the codec's ADC space (build-only).

    >>> import numpy as np
    >>> from semstore.codec import PQVAECodec
    >>> x = np.random.default_rng(0).standard_normal((300, 16)).astype("float32")
    >>> codec = PQVAECodec(dim=16, num_subvectors=4, codebook_size=16, iterations=1).fit(x, progress=False)
    >>> index = IVFADCIndex.build(codec, np.arange(300) + 1, codec.encode(x), nlist=8)
    >>> scores, ids = index.search(x[:2], k=3, nprobe=8)
    >>> scores.shape, ids.dtype.name, len(index), index.nlist
    ((2, 3), 'int64', 300, 8)
    """

    def __init__(self, codec: PQVAECodec, index: faiss.Index, ivf: faiss.IndexIVF, ids: np.ndarray, flat: faiss.IndexPQ) -> None:
        """Wrap built FAISS parts; use :meth:`build`."""
        self._codec = codec
        self._index = index
        self._ivf = ivf
        self._ids = ids
        self._flat = flat
        self._lookup = IdLookup(ids, lambda: self._ids)
        self._search_params: dict[tuple[int, int], faiss.SearchParameters] = {}

    # -- construction --------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        codec: PQVAECodec,
        ids: Any,
        codes: Any,
        *,
        nlist: int | None = None,
        train_size: int = 65_536,
        kmeans_iterations: int = 10,
        seed: int = 0,
    ) -> "IVFADCIndex":
        """Partition ``codes`` (n, M) of items ``ids`` (n,) into ``nlist`` lists (default ~sqrt n).

        Raises ValueError for invalid or repeated ids, invalid codes, or fewer items than lists.
        """
        id_array = as_id_array(ids)
        code_array = codec.validate_codes(codes)
        if len(code_array) != len(id_array):
            raise ValueError(f"{len(id_array)} ids but {len(code_array)} code rows")
        if len(id_array) == 0:
            raise ValueError("an IVF index needs at least one item to train its partition")
        if id_array.min() < 0:
            raise ValueError("ids must be >= 0 (FAISS uses -1 for 'no result')")
        if len(unique_sorted(id_array)) != len(id_array):
            raise ValueError("ids are repeated")
        lists = default_nlist(len(id_array)) if nlist is None else int(nlist)
        if not 1 <= lists <= len(id_array):
            raise ValueError(f"nlist must be in [1, {len(id_array)}], got {nlist}")

        layout = choose_layout(codec.codebook_size)
        m, width = codec.num_subvectors, codec.subvector_dim
        nbits = code_bits(codec.codebook_size, layout)
        centroids = _coarse_centroids(codec, code_array, lists, train_size, kmeans_iterations, seed)
        embedded = faiss.IndexFlatIP(codec.dim)
        embedded.add(centroids)
        quantizer = faiss.IndexFlatIP(m * width)
        quantizer.add(np.ascontiguousarray(np.linalg.lstsq(codec.query_matrix, centroids.T, rcond=None)[0].T, dtype=np.float32))
        ivf = faiss.IndexIVFPQ(quantizer, m * width, lists, m, nbits, faiss.METRIC_INNER_PRODUCT)
        ivf.by_residual = False
        faiss.copy_array_to_vector(shared_centroids(codec.codebook, m, nbits), ivf.pq.centroids)
        ivf.is_trained = True
        packed = pack_codes(code_array, nbits)
        positions = np.arange(len(id_array), dtype=np.int64)  # FAISS labels = storage positions
        _fill_lists(ivf, _assign(codec, embedded, code_array), positions, packed)
        flat = new_pq_index(codec.codebook, m, nbits)
        flat.add_sa_codes(packed)
        if layout == "fastscan":
            scan = faiss.IndexIVFPQFastScan(ivf, FASTSCAN_BLOCK)
            index: faiss.Index = faiss.IndexRefine(scan, flat)
            index.own_fields = False
            index.own_refine_index = False
            ivf = scan
        else:
            index = ivf
        built = cls(codec, index, ivf, id_array.copy(), flat)
        built._keep = (quantizer,)  # the FAISS objects above hold raw pointers into these
        return built

    # -- description ---------------------------------------------------------------------
    @property
    def codec(self) -> PQVAECodec:
        return self._codec

    @property
    def nlist(self) -> int:
        return int(self._ivf.nlist)

    @property
    def ntotal(self) -> int:
        return len(self._ids)

    def __len__(self) -> int:
        return self.ntotal

    def list_sizes(self) -> np.ndarray:
        """Number of items in each list (nlist,)."""
        return np.array([self._ivf.invlists.list_size(i) for i in range(self.nlist)], dtype=np.int64)

    @property
    def memory_bytes(self) -> int:
        """Memory of the items: list codes + list ids + flat re-rank codes + id array + lookup.

        Excludes fixed costs (centroids, codebook tables).
        """
        count = self.ntotal
        list_codes = int(self._ivf.code_size) * count
        if isinstance(self._ivf, faiss.IndexIVFPQFastScan):  # blocks of 32, half a byte per code
            list_codes = (self._codec.num_subvectors + 1) // 2 * count
        flat = int(self._flat.codes.size()) if self._index is not self._ivf else 0
        return list_codes + 8 * count + flat + self._ids.nbytes + self._lookup.nbytes

    # -- reading -------------------------------------------------------------------------
    def codes_for(self, ids: Any) -> np.ndarray:
        """Codes (n, M) of ``ids`` as stored; KeyError naming ids not in the index."""
        wanted = as_id_array(ids)
        present, positions = self._lookup.find(wanted)
        if not present.all():
            raise KeyError(f"ids not in the index: {wanted[~present][:10].tolist()}")
        nbits = int(self._flat.pq.nbits)
        row = code_size(self._codec.num_subvectors, nbits)
        rows = faiss.rev_swig_ptr(self._flat.codes.data(), self.ntotal * row).reshape(self.ntotal, row)
        return unpack_codes(rows[positions], self._codec.num_subvectors, nbits).astype(self._codec.code_dtype)

    def search(self, queries: Any, k: int, *, nprobe: int = 16, refine: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per query among the ``nprobe`` best lists: (scores (nq, k) float32, ids (nq, k) int64).

        Fast-scan candidates (``refine * k`` of them) are re-scored exactly from the codes.
        Missing results have id -1 and score -inf.
        """
        for name, value in (("k", k), ("nprobe", nprobe), ("refine", refine)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        sub, offset = self._codec.query_parts(queries)
        scores, positions = search_padded(self._index, sub, int(k), self._params(int(nprobe), int(refine)))
        scores += offset[:, None]
        scores[positions < 0] = -np.inf
        ids = np.where(positions >= 0, self._ids[np.maximum(positions, 0)], -1)
        return np.ascontiguousarray(scores, dtype=np.float32), ids

    def _params(self, nprobe: int, refine: int) -> faiss.SearchParameters:
        """FAISS search parameters, built once per (nprobe, refine): building them costs about
        as much as scanning a few lists, and searches only read them."""
        key = (min(nprobe, self.nlist), refine)
        params = self._search_params.get(key)
        if params is None:
            ivf_params = faiss.SearchParametersIVF(nprobe=key[0])
            if self._index is self._ivf:
                params = ivf_params
            else:
                params = faiss.IndexRefineSearchParameters(k_factor=float(refine), base_index_params=ivf_params)
                params._keep = ivf_params  # the refine parameters hold a raw pointer to these
            self._search_params[key] = params
        return params

    def __repr__(self) -> str:
        return f"IVFADCIndex(nlist={self.nlist}, ntotal={self.ntotal}, M={self._codec.num_subvectors}, K={self._codec.codebook_size})"


def _decoded(codec: PQVAECodec, codes: np.ndarray) -> np.ndarray:
    """Decoded vectors minus the codec mean (the part of an item that queries score), float32."""
    return codec.decode(codes, normalize=False) - codec.mean


def _coarse_centroids(
    codec: PQVAECodec, codes: np.ndarray, nlist: int, train_size: int, iterations: int, seed: int
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sample = codes if len(codes) <= train_size else codes[np.sort(rng.choice(len(codes), train_size, replace=False))]
    vectors = np.ascontiguousarray(_decoded(codec, sample))
    if nlist == 1:
        return vectors.mean(axis=0, keepdims=True)
    kmeans = faiss.Kmeans(vectors.shape[1], nlist, niter=iterations, spherical=True, seed=seed, max_points_per_centroid=256)
    kmeans.train(vectors)
    return kmeans.centroids


def _assign(codec: PQVAECodec, embedded: faiss.IndexFlatIP, codes: np.ndarray) -> np.ndarray:
    """List number of every item: the centroid with the largest inner product (chunked)."""
    lists = np.empty(len(codes), dtype=np.int64)
    for start in range(0, len(codes), _ASSIGN_CHUNK):
        chunk = codes[start : start + _ASSIGN_CHUNK]
        lists[start : start + len(chunk)] = embedded.search(np.ascontiguousarray(_decoded(codec, chunk)), 1)[1][:, 0]
    return lists


def _fill_lists(ivf: faiss.IndexIVF, lists: np.ndarray, labels: np.ndarray, packed: np.ndarray) -> None:
    """Append each item's packed codes as-is to its list (no re-encoding)."""
    order = np.argsort(lists, kind="stable")
    bounds = np.searchsorted(lists[order], np.arange(ivf.nlist + 1))
    for number in np.nonzero(np.diff(bounds))[0]:
        chosen = order[bounds[number] : bounds[number + 1]]
        chosen_labels = np.ascontiguousarray(labels[chosen])
        chosen_codes = np.ascontiguousarray(packed[chosen])
        ivf.invlists.add_entries(int(number), len(chosen), faiss.swig_ptr(chosen_labels), faiss.swig_ptr(chosen_codes))
    ivf.ntotal = len(labels)
