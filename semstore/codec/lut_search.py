"""Residual beam search through FAISS's look-up-table step kernel (exact, much faster than numpy).

For stage codebooks ``B`` (M, K, D) the squared error of a partial code depends on the
vector only through ``<y, B[m, k]>`` (one matrix product per vector, computed here with
torch) and on the codebooks through their cross products ``<B[m, k], B[m', k']>`` (computed
once per codebook). FAISS's ``beam_search_encode_step_tab`` then runs each stage of the beam
search from these tables in C++ (OpenMP), without touching D-dimensional residuals: the
codes equal those of :func:`semstore.codec.quantizer.beam_encode`.

Stages are stepped from Python (FAISS's ``refine_beam_LUT`` keeps the same width to the
end) so that the last stage keeps only the best candidate: the code is the same, and the
final top-k over ``beam_size * K`` candidates becomes an argmin.

Two optional speed-ups, both off in the exact search that training uses:

* ``exact_topk=False`` keeps each stage's survivors with FAISS's approximate top-k (the K
  candidates of each beam entry split into 8 buckets, the best 3 of each kept). With the
  default K=256 it encoded MiniLM vectors 1.1-1.3x faster at beams 2-16, with the same mean
  squared error to within 0.02 % (bench/RESULTS.md).
* ``bfloat16_products=True`` computes ``<y, B[m, k]>`` in bfloat16 (inputs and results
  rounded to 8-bit mantissas; torch has no CPU product of bfloat16 inputs with a float32
  result). That product is about a third of the encoding time in float32 and 3.5x cheaper in
  bfloat16 on CPUs with native bfloat16 instructions (:func:`native_bfloat16`). The rounding
  changes about 15 % of the codes of MiniLM vectors, but not their quality: the mean relative
  squared error at beams 8 / 12 / 16 was 0.29255 / 0.28997 / 0.28851 against 0.29247 /
  0.28991 / 0.28859 exact (bench/RESULTS.md). Where the CPU lacks those instructions torch
  emulates them and the product gets slower, so the codec turns it on only where they exist.

numpy's OpenBLAS keeps its worker threads spinning for a while after each product, and they
took a core from the FAISS kernel that runs next (OpenMP). torch's products into one buffer
reused by every chunk avoid that without touching the environment.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

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


@functools.cache
def native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16 flags, Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


class LutBeamSearch:
    """FAISS look-up-table beam search over fixed stage codebooks (plain squared error).

    Thread-safe: :meth:`encode` only reads the prepared tables.
    """

    def __init__(self, stage_books: np.ndarray) -> None:
        import torch

        m_count, k_count, dim = stage_books.shape
        if not self.applies(m_count, k_count):
            raise ValueError(f"no FAISS look-up-table search for M={m_count}, K={k_count}")
        flat = np.ascontiguousarray(stage_books.reshape(m_count * k_count, dim), dtype=np.float32)
        self._m, self._k = m_count, k_count
        self._books_t = torch.from_numpy(np.ascontiguousarray(flat.T))
        # <B[m', k'], B[m, k]> for every pair of codewords; each stage reads the columns of its
        # own codebook in the rows of the earlier stages' chosen codewords
        self._cross = torch.mm(self._books_t.T, self._books_t).numpy().ravel()
        self._norms = np.einsum("kD,kD->k", flat, flat).astype(np.float32)
        self._offsets = np.arange(m_count, dtype=np.uint64) * np.uint64(k_count)

    @functools.cached_property
    def _books_t_bf16(self) -> Any:
        """The codebooks in bfloat16, built on first use (training never asks for them)."""
        import torch

        return self._books_t.to(torch.bfloat16)

    @staticmethod
    def applies(num_subvectors: int, codebook_size: int) -> bool:
        """Whether the cross-product table fits (any K: the step kernel takes any codebook size).

        That is M*K <= 8192: K=256 up to M=32, K=1024 up to M=8. Beyond, the numpy search runs.
        """
        return codebook_size >= 2 and 4 * (num_subvectors * codebook_size) ** 2 <= MAX_TABLE_BYTES

    def encode(
        self, targets: np.ndarray, beam_size: int, *, exact_topk: bool = True, bfloat16_products: bool = False
    ) -> np.ndarray:
        """Codes (n, M) int64 minimising ``||y - sum_m B[m, codes[m]]||^2`` by beam search.

        ``exact_topk=False`` selects each stage's survivors with FAISS's approximate top-k
        (beams up to 24 wide and codebooks of at least 64 codewords; otherwise it stays exact);
        ``bfloat16_products=True`` computes the vector-codeword products in bfloat16.
        """
        import faiss

        width = int(min(beam_size, float(self._k) ** self._m))
        approximate = not exact_topk and 1 < width <= _APPROX_MAX_WIDTH and self._k >= _APPROX_MIN_CODEBOOK
        mode = faiss.APPROX_TOPK_BUCKETS_B8_D3 if approximate else faiss.EXACT_TOPK
        total = targets.shape[0]
        out = np.empty((total, self._m), dtype=np.int64)
        products = np.empty((min(total, _CHUNK), self._m * self._k), dtype=np.float32)  # <y, B[m, k]>
        for start in range(0, total, _CHUNK):
            chunk = np.ascontiguousarray(targets[start : start + _CHUNK], dtype=np.float32)
            n = chunk.shape[0]
            self._products(chunk, products[:n], bfloat16_products)
            out[start : start + n] = self._search(chunk, products[:n], width, mode)
        return out

    def _products(self, chunk: np.ndarray, out: np.ndarray, bfloat16: bool) -> None:
        import torch

        if bfloat16:
            rounded = torch.from_numpy(chunk).to(torch.bfloat16)
            torch.from_numpy(out).copy_(torch.mm(rounded, self._books_t_bf16))
        else:
            torch.mm(torch.from_numpy(chunk), self._books_t, out=torch.from_numpy(out))

    def _search(self, chunk: np.ndarray, products: np.ndarray, width: int, mode: int) -> np.ndarray:
        import faiss

        ptr = faiss.swig_ptr
        n, total = chunk.shape[0], self._m * self._k
        distances = np.einsum("nD,nD->n", chunk, chunk).astype(np.float32)  # ||y - 0||^2, beam of 1
        codes = np.zeros((n, 1, 0), dtype=np.int32)
        flat_products = products.ravel()
        for m in range(self._m):
            beams = codes.shape[1]
            # the last stage only needs the best candidate: same code, an argmin instead of a top-k
            kept = 1 if m == self._m - 1 else min(beams * self._k, width)
            new_codes = np.empty((n, kept, m + 1), dtype=np.int32)
            new_distances = np.empty((n, kept), dtype=np.float32)
            offset = m * self._k
            faiss.beam_search_encode_step_tab(
                self._k, n, beams,
                ptr(self._cross[offset:]), total, ptr(self._offsets),
                ptr(flat_products[offset:]), total, ptr(self._norms[offset:]),
                m, ptr(codes), ptr(distances), kept, ptr(new_codes), ptr(new_distances),
                mode if kept > 1 else faiss.EXACT_TOPK,
            )
            codes, distances = new_codes, new_distances
        return codes[:, 0, :]
