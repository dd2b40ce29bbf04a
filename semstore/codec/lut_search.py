"""Residual beam search through FAISS's look-up-table kernel (exact, much faster than numpy).

For stage codebooks ``B`` (M, K, D) the squared error of a partial code depends on the
vector only through ``<y, B[m, k]>`` (one matrix product per vector, computed here with
BLAS) and on the codebooks through their cross products ``<B[m, k], B[m', k']>`` (computed
once per codebook by FAISS). FAISS's ``ResidualQuantizer.refine_beam_LUT`` then runs the
whole beam search from these tables in C++ (OpenMP), without touching D-dimensional
residuals: the codes equal those of :func:`semstore.codec.quantizer.beam_encode`.

Keeping the best ``beam_size`` of the ``beam_size * K`` candidates at each stage takes a
large share of the kernel's time; ``exact_topk=False`` uses FAISS's approximate top-k (the
K candidates of each beam entry split into 8 buckets, the best 3 of each kept). With the
default K=256 it encoded MiniLM vectors 1.1-1.3x faster at beams 2-16, with the same mean
squared error to within 0.02 % (bench/RESULTS.md).

The products go through torch into one buffer reused by every chunk. numpy's OpenBLAS
keeps its worker threads spinning for a while after each product, and they took a core
from the FAISS kernel that runs next (OpenMP): with ``OPENBLAS_THREAD_TIMEOUT=4`` the
numpy version encoded 1.2-1.4x faster. torch's products into the reused buffer recover
part of that without touching the environment: in separate-process runs on 2 cores the
whole encode got 1.0-1.2x faster, as measured on a machine whose own speed drifted by up
to 1.5x (bench/RESULTS.md).
"""

from __future__ import annotations

import threading

import numpy as np

#: Largest cross-product table (bytes) worth building: (M*K)^2 float32 values.
MAX_TABLE_BYTES = 256 * 1024 * 1024
_CHUNK = 4096
#: Widest beam the approximate top-k serves: its first stage keeps 8 buckets x 3 candidates.
_APPROX_MAX_WIDTH = 24
#: Smallest codebook it serves. Up to 24 codewords its 8 buckets x 3 keep every candidate
#: anyway (same codes, more work): the exact top-k encoded 1.1-1.3x faster at K=16, beam 16, on
#: MiniLM (25,000 vectors, 2 cores); K=32-128 showed no difference either way.
_APPROX_MIN_CODEBOOK = 64


class LutBeamSearch:
    """FAISS look-up-table beam search over fixed stage codebooks (plain squared error).

    Thread-safe: :meth:`encode` only reads the prepared tables (the top-k mode, the one
    setting a call changes, is switched under a lock).
    """

    def __init__(self, stage_books: np.ndarray) -> None:
        import faiss

        m_count, k_count, dim = stage_books.shape
        if not self.applies(m_count, k_count):
            raise ValueError(f"no FAISS look-up-table search for M={m_count}, K={k_count}")
        self._flat_t = np.ascontiguousarray(stage_books.reshape(m_count * k_count, dim).T, dtype=np.float32)
        self._m, self._k = m_count, k_count
        quantizer = faiss.ResidualQuantizer(dim, m_count, k_count.bit_length() - 1)
        faiss.copy_array_to_vector(np.ascontiguousarray(stage_books, dtype=np.float32).ravel(), quantizer.codebooks)
        quantizer.is_trained = True
        quantizer.use_beam_LUT = 1
        quantizer.compute_codebook_tables()
        self._quantizer = quantizer
        self._mode_lock = threading.Lock()

    @staticmethod
    def applies(num_subvectors: int, codebook_size: int) -> bool:
        """FAISS needs K = 2**nbits (nbits <= 8 here) and a cross-product table that fits."""
        power_of_two = codebook_size >= 2 and codebook_size & (codebook_size - 1) == 0
        return power_of_two and codebook_size <= 256 and 4 * (num_subvectors * codebook_size) ** 2 <= MAX_TABLE_BYTES

    def encode(self, targets: np.ndarray, beam_size: int, *, exact_topk: bool = True) -> np.ndarray:
        """Codes (n, M) int64 minimising ``||y - sum_m B[m, codes[m]]||^2`` by beam search.

        ``exact_topk=False`` selects each stage's survivors with FAISS's approximate top-k
        (beams up to 24 wide and codebooks of at least 64 codewords; otherwise it stays exact).
        """
        import faiss

        # The beam width is an argument of the call (the quantizer's max_beam_size is not
        # read); the top-k mode is the quantizer's, hence the lock.
        width = int(min(beam_size, float(self._k) ** self._m))
        approximate = not exact_topk and 1 < width <= _APPROX_MAX_WIDTH and self._k >= _APPROX_MIN_CODEBOOK
        mode = faiss.APPROX_TOPK_BUCKETS_B8_D3 if approximate else faiss.EXACT_TOPK
        with self._mode_lock:
            self._quantizer.approx_topk_mode = mode
            return self._encode(targets, width)

    def _encode(self, targets: np.ndarray, width: int) -> np.ndarray:
        import faiss
        import torch

        total = targets.shape[0]
        out = np.empty((total, self._m), dtype=np.int64)
        rows = min(total, _CHUNK)
        products = np.empty((rows, self._flat_t.shape[1]), dtype=np.float32)  # <y, B[m, k]>, all codewords
        products_t = torch.from_numpy(products)
        codes = np.empty((rows, width, self._m), dtype=np.int32)
        distances = np.empty((rows, width), dtype=np.float32)
        books_t = torch.from_numpy(self._flat_t)
        for start in range(0, total, _CHUNK):
            chunk = np.ascontiguousarray(targets[start : start + _CHUNK], dtype=np.float32)
            n = chunk.shape[0]
            torch.mm(torch.from_numpy(chunk), books_t, out=products_t[:n])
            norms = np.einsum("nD,nD->n", chunk, chunk).astype(np.float32)
            self._quantizer.refine_beam_LUT(
                n, faiss.swig_ptr(norms), faiss.swig_ptr(products), width,
                faiss.swig_ptr(codes), faiss.swig_ptr(distances),
            )
            out[start : start + n] = codes[:n, 0, :]
        return out
