"""Codes and ids kept inside one FAISS ``IndexIDMap``; the layout-specific plumbing."""

from __future__ import annotations

import faiss
import numpy as np

from semstore.index.layouts import (
    Layout,
    PQ4Map,
    byte_view,
    code_bits,
    code_size,
    fastscan_from_codes,
    new_fastscan_index,
    new_pq_index,
    pack_codes,
    unpack_codes,
)


class CodeStore:
    """The FAISS side of an index: an ``IndexIDMap`` over an IndexPQ or IndexPQFastScan.

    The codes live only in FAISS's own buffers and the ids only in the id map; readers get
    zero-copy views, so callers must not mutate while a view is in use (ADCIndex's lock).
    Not thread-safe by itself.
    """

    def __init__(
        self,
        codebook: np.ndarray,
        num_subvectors: int,
        layout: Layout,
        index: faiss.IndexIDMap | None = None,
    ) -> None:
        self.codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        self.num_subvectors = num_subvectors
        self.layout: Layout = layout
        self.nbits = code_bits(codebook.shape[0], layout)
        if index is None:
            inner = (
                new_fastscan_index(self.codebook, num_subvectors)
                if layout == "fastscan"
                else new_pq_index(self.codebook, num_subvectors, self.nbits)
            )
            index = faiss.IndexIDMap(inner)
        self.index = index
        self.inner = faiss.downcast_index(index.index)
        self._pq4 = PQ4Map(self.inner) if layout == "fastscan" else None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def row_bytes(self) -> int:
        """Bytes of one packed code row in IndexPQ form."""
        return code_size(self.num_subvectors, self.nbits)

    def code_bytes(self) -> int:
        """Bytes FAISS holds for the codes (fast-scan pads to whole blocks and even M)."""
        return int(self.inner.codes.size())

    def ids_view(self) -> np.ndarray:
        """The ids in storage order (zero-copy view of the id map)."""
        return byte_view(self.index.id_map.data(), self.ntotal)

    # -- mutation ------------------------------------------------------------------------
    def append(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Append validated ``codes`` (n, M) with ``ids`` (n,) int64, as codes."""
        if self.layout == "pq":
            self.index.add_sa_codes(pack_codes(codes, self.nbits), ids)
            return
        # IndexFastScan has no add_sa_codes: pack the new codes in a converted index, merge
        # its blocks in, then extend the id map to match
        block = fastscan_from_codes(self.codebook, codes)
        start = self.ntotal
        self.inner.merge_from(block, 0)
        self.index.id_map.resize(start + len(ids))
        byte_view(self.index.id_map.data(), start + len(ids))[start:] = ids
        self.index.ntotal = self.inner.ntotal

    def remove(self, ids: np.ndarray) -> int:
        """Remove the items with these ids; returns how many were present."""
        if len(ids) == 0:
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))))

    # -- reading -------------------------------------------------------------------------
    def read_codes(self, positions: np.ndarray) -> np.ndarray:
        """Integer codes (n, M) int64 of the items at storage ``positions``."""
        if len(positions) == 0:
            return np.empty((0, self.num_subvectors), dtype=np.int64)
        if self._pq4 is not None:
            return self._pq4.read(byte_view(self.inner.codes.get(), self.code_bytes()), positions)
        rows = byte_view(self.inner.codes.data(), self.code_bytes()).reshape(self.ntotal, self.row_bytes)
        return unpack_codes(rows[positions], self.num_subvectors, self.nbits)

    def subset_index(self, positions: np.ndarray) -> faiss.IndexPQ:
        """An exact IndexPQ holding the codes at ``positions`` (local id i = positions[i])."""
        index = new_pq_index(self.codebook, self.num_subvectors, self.nbits)
        if len(positions):
            if self.layout == "pq":
                rows = byte_view(self.inner.codes.data(), self.code_bytes()).reshape(self.ntotal, self.row_bytes)
                index.add_sa_codes(np.ascontiguousarray(rows[positions]))
            else:
                index.add_sa_codes(pack_codes(self.read_codes(positions), self.nbits))
        return index

    def scan(self, sub_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search of all items: (LUT sums (nq, k), storage positions (nq, k), -1 = none).

        Exact for the ``pq`` layout; fast-scan sums quantised tables (approximate scores).
        """
        return search_padded(self.inner, sub_queries, k)


def search_padded(
    index: faiss.Index, sub_queries: np.ndarray, k: int, params: faiss.SearchParameters | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` for any k >= 1 (k beyond ntotal is padded with -inf / -1)."""
    nq = sub_queries.shape[0]
    if nq and k <= index.ntotal:  # the common case: no padding to allocate
        scores, positions = index.search(sub_queries, k, params=params)
        scores[positions < 0] = -np.inf
        return scores, positions
    scores = np.full((nq, k), -np.inf, dtype=np.float32)
    positions = np.full((nq, k), -1, dtype=np.int64)
    found = min(k, int(index.ntotal))
    if found and nq:
        dist, labels = index.search(sub_queries, found, params=params)
        scores[:, :found] = dist
        positions[:, :found] = labels
        scores[positions < 0] = -np.inf
    return scores, positions
