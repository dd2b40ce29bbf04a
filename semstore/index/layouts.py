"""FAISS code layouts over a shared codebook: packing, centroid tables, reading stored codes.

Two layouts hold the same integer codes:

* ``"pq"``: :class:`faiss.IndexPQ` with ``nbits = ceil(log2 K)`` bits per code (at least 3), codes packed
  as FAISS's little-endian bit string (code ``m`` occupies bits ``m*nbits .. (m+1)*nbits-1``;
  byte-aligned for 8 and 16 bits); exact float look-up tables.
* ``"fastscan"``: :class:`faiss.IndexPQFastScan`, 4-bit codes interleaved in blocks of
  ``bbs`` vectors for SIMD scanning with 8-bit quantised look-up tables.

Every sub-quantizer's centroid table is the codec's shared codebook, padded with zero rows
up to ``2**nbits`` (codes never point at the padding).
"""

from __future__ import annotations

import math
from typing import Literal

import faiss
import numpy as np

Layout = Literal["pq", "fastscan"]
LAYOUTS: tuple[str, ...] = ("pq", "fastscan")
FASTSCAN_BLOCK = 32
_PACK_CHUNK = 65536


def choose_layout(codebook_size: int, layout: str | None = None) -> Layout:
    """Fast-scan for K == 16, IndexPQ otherwise; an explicit ``layout`` is checked and kept."""
    if layout is None:
        return "fastscan" if codebook_size == 16 else "pq"
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "fastscan" and codebook_size > 16:
        raise ValueError(f"the fast-scan layout holds 4-bit codes: codebook_size {codebook_size} > 16")
    return layout  # type: ignore[return-value]


def code_bits(codebook_size: int, layout: Layout) -> int:
    """Bits per stored code: 4 for fast-scan, else ``max(3, ceil(log2 K))``.

    The floor of 3 bits is FAISS's: its look-up-table kernel for 2-wide sub-vectors needs
    ``2**nbits % 8 == 0``; it only costs space for toy codebooks of K < 8.
    """
    if layout == "fastscan":
        return 4
    return max(3, math.ceil(math.log2(codebook_size)))


def code_size(num_subvectors: int, nbits: int) -> int:
    """Bytes of one packed code row, as FAISS computes it."""
    return (num_subvectors * nbits + 7) // 8


def pack_codes(codes: np.ndarray, nbits: int) -> np.ndarray:
    """Integer codes (n, M) -> FAISS PQ byte codes (n, code_size) uint8."""
    n, m = codes.shape
    if nbits == 8:
        return np.ascontiguousarray(codes, dtype=np.uint8)
    if nbits == 16:
        return np.ascontiguousarray(codes, dtype="<u2").view(np.uint8).reshape(n, 2 * m)
    if nbits == 4:  # two codes per byte, the first in the low nibble
        nibbles = np.zeros((n, m + m % 2), dtype=np.uint8)
        nibbles[:, :m] = codes
        return np.ascontiguousarray(nibbles[:, 0::2] | (nibbles[:, 1::2] << 4))
    out = np.empty((n, code_size(m, nbits)), dtype=np.uint8)
    shifts = np.arange(nbits, dtype=np.int64)
    for start in range(0, n, _PACK_CHUNK):  # chunks bound the bit array's memory
        chunk = np.asarray(codes[start : start + _PACK_CHUNK], dtype=np.int64)
        bits = ((chunk[:, :, None] >> shifts) & 1).astype(np.uint8).reshape(len(chunk), m * nbits)
        out[start : start + len(chunk)] = np.packbits(bits, axis=1, bitorder="little")
    return out


def unpack_codes(packed: np.ndarray, num_subvectors: int, nbits: int) -> np.ndarray:
    """FAISS PQ byte codes (n, code_size) -> integer codes (n, M) int64."""
    n = packed.shape[0]
    if nbits == 8:
        return packed.astype(np.int64)
    if nbits == 16:
        return np.ascontiguousarray(packed).view("<u2").reshape(n, num_subvectors).astype(np.int64)
    bits = np.unpackbits(packed, axis=1, count=num_subvectors * nbits, bitorder="little")
    weights = np.left_shift(1, np.arange(nbits, dtype=np.int64))
    return bits.reshape(n, num_subvectors, nbits).astype(np.int64) @ weights


def shared_centroids(codebook: np.ndarray, num_subvectors: int, nbits: int) -> np.ndarray:
    """The codebook padded with zero rows to ``2**nbits`` and tiled M times, flat float32."""
    rows, width = codebook.shape
    padded = np.zeros((1 << nbits, width), dtype=np.float32)
    padded[:rows] = codebook
    return np.ascontiguousarray(np.tile(padded, (num_subvectors, 1)).ravel())


def new_pq_index(codebook: np.ndarray, num_subvectors: int, nbits: int) -> faiss.IndexPQ:
    """An empty, trained inner-product IndexPQ whose sub-quantizers all hold ``codebook``."""
    index = faiss.IndexPQ(num_subvectors * codebook.shape[1], num_subvectors, nbits, faiss.METRIC_INNER_PRODUCT)
    faiss.copy_array_to_vector(shared_centroids(codebook, num_subvectors, nbits), index.pq.centroids)
    index.is_trained = True
    return index


def new_fastscan_index(codebook: np.ndarray, num_subvectors: int) -> faiss.IndexPQFastScan:
    """An empty, trained inner-product IndexPQFastScan (4-bit) over ``codebook``."""
    index = faiss.IndexPQFastScan(
        num_subvectors * codebook.shape[1], num_subvectors, 4, faiss.METRIC_INNER_PRODUCT, FASTSCAN_BLOCK
    )
    faiss.copy_array_to_vector(shared_centroids(codebook, num_subvectors, 4), index.pq.centroids)
    index.is_trained = True
    return index


def fastscan_from_codes(codebook: np.ndarray, codes: np.ndarray) -> faiss.IndexPQFastScan:
    """A fast-scan index holding ``codes`` (n, M), added as codes (IndexPQ -> conversion)."""
    flat = new_pq_index(codebook, codes.shape[1], 4)
    flat.add_sa_codes(pack_codes(codes, 4))
    return faiss.IndexPQFastScan(flat, FASTSCAN_BLOCK)


def centroids_match(pq: faiss.ProductQuantizer, codebook: np.ndarray, num_subvectors: int, nbits: int) -> bool:
    """Whether a (loaded) product quantizer holds exactly the shared codebook in every slot."""
    expected = shared_centroids(codebook, num_subvectors, nbits)
    stored = faiss.vector_to_array(pq.centroids)
    return stored.shape == expected.shape and bool(np.array_equal(stored, expected))


def byte_view(pointer: object, size: int, dtype: type = np.uint8) -> np.ndarray:
    """Zero-copy numpy view of a FAISS buffer; valid only until the buffer is next resized."""
    if size == 0:
        return np.empty(0, dtype=dtype)
    return faiss.rev_swig_ptr(pointer, size)


class PQ4Map:
    """Where each 4-bit code of a fast-scan block lives: (byte offset, nibble shift).

    Derived once from FAISS's own packer (one probe per vector slot and sub-quantizer), so
    it follows FAISS's interleaved layout instead of re-implementing it; reading codes is then
    one vectorised gather.
    """

    def __init__(self, index: faiss.IndexPQFastScan) -> None:
        self.num_subvectors = int(index.M)
        self.block_vectors = int(index.bbs)
        packer = index.get_CodePacker()
        self.block_bytes = int(packer.block_size)
        self.offsets = np.empty((self.block_vectors, self.num_subvectors), dtype=np.int64)
        self.shifts = np.empty((self.block_vectors, self.num_subvectors), dtype=np.uint8)
        block = np.zeros(self.block_bytes, dtype=np.uint8)
        for m in range(self.num_subvectors):
            probe = np.zeros((1, self.num_subvectors), dtype=np.int64)
            probe[0, m] = 15
            flat = pack_codes(probe, 4)[0]
            for slot in range(self.block_vectors):
                block[:] = 0
                packer.pack_1_c(faiss.swig_ptr(flat), slot, faiss.swig_ptr(block))
                (where,) = np.nonzero(block)
                if len(where) != 1 or block[where[0]] not in (0x0F, 0xF0):
                    raise RuntimeError("unexpected FAISS fast-scan code layout")
                self.offsets[slot, m] = where[0]
                self.shifts[slot, m] = 0 if block[where[0]] == 0x0F else 4

    def read(self, buffer: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Codes (n, M) int64 of the vectors at ``positions`` in a packed fast-scan buffer."""
        blocks, slots = np.divmod(positions.astype(np.int64), self.block_vectors)
        where = blocks[:, None] * self.block_bytes + self.offsets[slots]
        return ((buffer[where] >> self.shifts[slots]) & 0x0F).astype(np.int64)
