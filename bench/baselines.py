"""Vector compressors compared by the codec-quality benchmark, behind one small interface.

Every method stores ``bits`` bits per vector (except ``float``) and supports:
``fit(train)``, ``encode(X) -> codes``, ``decode(codes) -> X_hat``,
``search(Q, codes, k) -> (scores, ids)`` (inner-product ADC: float query vs codes, done by
the FAISS index itself, never by decoding), and ``symbols(codes)`` (the code as integers,
one column per position, for entropy measurements).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from typing import Any

import faiss
import numpy as np

from bench.metrics import exact_topk_inner_product

IP = faiss.METRIC_INNER_PRODUCT


class BaselineError(RuntimeError):
    """Raised when a method cannot be built for the requested bits / dimension."""


class NotFittedError(BaselineError):
    """Raised when encode/decode/search is called before fit."""


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


class Compressor(ABC):
    """A trained vector compressor with inner-product ADC search."""

    name: str
    bits: int
    #: number of distinct values of one symbol; ``None`` when entropy does not apply
    alphabet_size: int | None = None
    #: free-text settings shown in the report (beam width, training type, ...)
    details: str = ""

    @abstractmethod
    def fit(self, train: np.ndarray) -> None:
        """Train on float vectors (n, d)."""

    @abstractmethod
    def encode(self, X: np.ndarray) -> np.ndarray:
        """Codes as stored, one row per vector (uint8 unless stated otherwise)."""

    @abstractmethod
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Float32 reconstructions (n, d)."""

    @abstractmethod
    def search(self, Q: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) of float queries against the coded database, inner product."""

    def symbols(self, codes: np.ndarray) -> np.ndarray | None:
        """Codes as integer symbols (n, positions); ``None`` when not applicable."""
        return None

    def bytes_per_vector(self, codes: np.ndarray) -> float:
        """Bytes of one stored code row (fixed-length layout)."""
        return codes.nbytes / max(len(codes), 1)


# --------------------------------------------------------------------------- float


class FloatBaseline(Compressor):
    """Uncompressed float32 vectors, exact inner-product search (the ceiling)."""

    name = "float"

    def __init__(self, dim: int) -> None:
        self.bits = 32 * dim

    def fit(self, train: np.ndarray) -> None:
        return None

    def encode(self, X: np.ndarray) -> np.ndarray:
        return _f32(X).copy()

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return _f32(codes)

    def search(self, Q: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = faiss.IndexFlatIP(codes.shape[1])
        index.add(_f32(codes))
        return index.search(_f32(Q), k)


# --------------------------------------------------------------------------- FAISS codecs


class _FaissCodec(Compressor):
    """Shared plumbing for FAISS indexes whose ``sa_encode`` codes are the stored codes."""

    index: Any = None

    def _require(self) -> Any:
        if self.index is None or not self.index.is_trained:
            raise NotFittedError(f"{self.name}: call fit() first")
        return self.index

    def fit(self, train: np.ndarray) -> None:
        self.index = self._build(train.shape[1])
        self.index.train(_f32(train))

    @abstractmethod
    def _build(self, dim: int) -> Any:
        """An untrained FAISS index."""

    def encode(self, X: np.ndarray) -> np.ndarray:
        return self._require().sa_encode(_f32(X))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self._require().sa_decode(np.ascontiguousarray(codes, dtype=np.uint8))

    def _filled(self, codes: np.ndarray) -> Any:
        """A copy of the trained index holding ``codes`` (no re-encoding)."""
        index = faiss.clone_index(self._require())
        index.reset()
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if isinstance(inner, faiss.IndexFastScan):
            _add_fastscan_codes(inner, codes)
        else:
            inner.add_sa_codes(codes)
        index.ntotal = inner.ntotal
        return index

    def search(self, Q: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._filled(codes).search(_f32(Q), k)

    def symbols(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes).astype(np.int64)


def _add_fastscan_codes(index: Any, codes: np.ndarray) -> None:
    """Store flat PQ codes in a fast-scan index's block layout (it has no add_sa_codes)."""
    packer = index.get_CodePacker()
    n = codes.shape[0]
    n_blocks = (n + packer.nvec - 1) // packer.nvec
    flat = np.zeros((n_blocks * packer.nvec, packer.code_size), dtype=np.uint8)
    flat[:n] = codes
    blocks = np.zeros((n_blocks, packer.block_size), dtype=np.uint8)
    for b in range(n_blocks):
        packer.pack_all(faiss.swig_ptr(flat[b * packer.nvec:(b + 1) * packer.nvec]),
                        faiss.swig_ptr(blocks[b]))
    faiss.copy_array_to_AlignedTable(blocks.ravel(), index.codes)
    index.ntotal = n
    index.ntotal2 = n_blocks * packer.nvec


def _opq(dim: int, m: int, nbits: int, index: Any, niter: int) -> Any:
    """``index`` behind an OPQ rotation trained for an ``m`` x ``nbits`` PQ (faiss OPQMatrix).

    The rotation's inner PQ has the same ``nbits`` as the final one; for 4-bit codes this
    is both the right objective and ~5x cheaper than the default 8-bit inner PQ.
    """
    opq = faiss.OPQMatrix(dim, m)
    opq.niter = niter
    opq.pq = faiss.ProductQuantizer(dim, m, nbits)
    wrapped = faiss.IndexPreTransform(opq, index)
    wrapped.referenced_objects.append(opq.pq)  # the inner PQ must outlive this call
    return wrapped


def _subquantizers(bits: int, bits_per_code: int, dim: int, name: str) -> int:
    if bits % bits_per_code:
        raise BaselineError(f"{name}: {bits} bits is not a multiple of {bits_per_code}")
    m = bits // bits_per_code
    if dim % m:
        raise BaselineError(f"{name}: dim {dim} is not divisible by M={m}")
    return m


class PQBaseline(_FaissCodec):
    """FAISS product quantizer, 8-bit codes: M = bits / 8 sub-quantizers."""

    alphabet_size = 256

    def __init__(self, bits: int, dim: int, opq: bool = False, opq_niter: int = 50) -> None:
        self.bits = bits
        self.m = _subquantizers(bits, 8, dim, "PQ")
        self.opq = opq
        self.opq_niter = opq_niter
        self.name = "OPQ+PQ" if opq else "PQ"
        self.details = f"OPQ{self.m}(niter={opq_niter}),PQ{self.m}x8" if opq else f"PQ{self.m}x8"

    def _build(self, dim: int) -> Any:
        index = faiss.IndexPQ(dim, self.m, 8, IP)
        return _opq(dim, self.m, 8, index, self.opq_niter) if self.opq else index


class FastScanBaseline(_FaissCodec):
    """FAISS 4-bit PQ with fast-scan search (quantised LUTs): M = bits / 4."""

    alphabet_size = 16

    def __init__(self, bits: int, dim: int, opq: bool = False, opq_niter: int = 50) -> None:
        self.bits = bits
        self.m = _subquantizers(bits, 4, dim, "PQ4fs")
        self.opq = opq
        self.opq_niter = opq_niter
        self.name = "OPQ+PQ4fs" if opq else "PQ4fs"
        self.details = (f"OPQ{self.m}(niter={opq_niter}, 4-bit inner PQ),PQ{self.m}x4fs" if opq
                        else f"PQ{self.m}x4fs")

    def _build(self, dim: int) -> Any:
        index = faiss.IndexPQFastScan(dim, self.m, 4, IP)
        return _opq(dim, self.m, 4, index, self.opq_niter) if self.opq else index

    def symbols(self, codes: np.ndarray) -> np.ndarray:
        return faiss.unpack_bitstrings(np.ascontiguousarray(codes, dtype=np.uint8), self.m, 4
                                       ).astype(np.int64)


class RQBaseline(_FaissCodec):
    """FAISS residual quantizer, 8-bit codebooks, M = bits / 8 steps, beam-search encoding.

    Trained with progressive-dimension k-means (``Train_progressive_dim``), plus
    least-squares codebook refinement (``Train_refine_codebook``) when ``refine``, using a
    beam of ``train_beam``; codes are computed with beam ``beam`` (LUT-accelerated).
    ``kmeans_niter`` / ``kmeans_max_points_per_centroid`` cheapen the per-step k-means.
    """

    name = "RQ"
    alphabet_size = 256

    def __init__(self, bits: int, dim: int, beam: int = 16, train_beam: int | None = None,
                 refine: bool = True, kmeans_niter: int | None = None,
                 kmeans_max_points_per_centroid: int | None = None) -> None:
        if bits % 8:
            raise BaselineError(f"RQ: {bits} bits is not a multiple of 8")
        self.bits = bits
        self.m = bits // 8
        self.beam = beam
        self.train_beam = train_beam or beam
        self.refine = refine
        self.kmeans_niter = kmeans_niter
        self.kmeans_max_points = kmeans_max_points_per_centroid
        self.details = (f"RQ{self.m}x8 beam={self.beam} train_beam={self.train_beam} "
                        f"progressive_dim{'+refine_codebook' if refine else ''}"
                        + (f" kmeans_niter={kmeans_niter}" if kmeans_niter else "")
                        + (f" kmeans_pts/centroid={self.kmeans_max_points}" if self.kmeans_max_points else ""))

    def _build(self, dim: int) -> Any:
        index = faiss.IndexResidualQuantizer(dim, self.m, 8, IP)
        rq = index.rq
        rq.train_type = faiss.ResidualQuantizer.Train_progressive_dim | (
            faiss.ResidualQuantizer.Train_refine_codebook if self.refine else 0)
        rq.max_beam_size = self.train_beam
        if self.kmeans_niter:
            rq.cp.niter = self.kmeans_niter
        if self.kmeans_max_points:
            rq.cp.max_points_per_centroid = self.kmeans_max_points
        return index

    def fit(self, train: np.ndarray) -> None:
        super().fit(train)
        self.index.rq.max_beam_size = self.beam
        self.index.rq.use_beam_LUT = 1  # same codes, several times faster beam encoding


# --------------------------------------------------------------------------- binary


class SignBinaryBaseline(Compressor):
    """Sign bits of a random orthogonal projection of the centred vector (no ITQ training).

    ``y = (x - mean) @ R[:, :bits]`` with R a seeded random orthogonal matrix; the code is
    ``y > 0`` packed to bytes. Decoding gives ``mean + (s * a) @ R[:, :bits].T`` with
    ``s = ±1`` and ``a_j`` = mean |y_j| on the training set. Search is asymmetric and exact:
    score = <q, decode(code)>, i.e. the float query against the ±1 bits (not Hamming).
    """

    name = "sign-binary"
    alphabet_size = 2

    def __init__(self, bits: int, dim: int, seed: int = 0) -> None:
        if bits > dim:
            raise BaselineError(f"sign-binary: {bits} bits exceeds the dimension {dim}")
        self.bits = bits
        self.seed = seed
        self.details = "sign(random rotation), asymmetric float-query ADC"
        self.projection: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    def fit(self, train: np.ndarray) -> None:
        dim = train.shape[1]
        rng = np.random.default_rng(self.seed)
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        q *= np.sign(np.diag(r))  # a Haar-distributed rotation
        self.projection = _f32(q[:, :self.bits])
        self.mean = _f32(train.mean(axis=0))
        self.scale = _f32(np.abs((train - self.mean) @ self.projection).mean(axis=0))

    def _require(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.projection is None or self.mean is None or self.scale is None:
            raise NotFittedError("sign-binary: call fit() first")
        return self.projection, self.mean, self.scale

    def encode(self, X: np.ndarray) -> np.ndarray:
        projection, mean, _ = self._require()
        return np.packbits(((_f32(X) - mean) @ projection) > 0, axis=1)

    def _signs(self, codes: np.ndarray) -> np.ndarray:
        bits = np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1, count=self.bits)
        return bits.astype(np.float32) * 2.0 - 1.0

    def decode(self, codes: np.ndarray) -> np.ndarray:
        projection, mean, scale = self._require()
        return _f32(mean + (self._signs(codes) * scale) @ projection.T)

    def search(self, Q: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        projection, mean, scale = self._require()
        signs = self._signs(codes)
        q = _f32(Q)
        q_proj = (q @ projection) * scale
        ids = exact_topk_inner_product(q_proj, signs, k)
        scores = np.einsum("nkb,nb->nk", signs[ids], q_proj) + (q @ mean)[:, None]
        return scores.astype(np.float32), ids

    def symbols(self, codes: np.ndarray) -> np.ndarray:
        return np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1, count=self.bits
                             ).astype(np.int64)


# --------------------------------------------------------------------------- PQ-VAE


class PQVAEBaseline(Compressor):
    """Adapter for ``semstore.codec.PQVAECodec`` (M = bits / log2(K) codes, one codebook).

    ADC goes through a FAISS ``IndexPQ(M*d, M, log2 K, inner product)`` whose every
    sub-quantizer table is the codec's shared codebook, filled with the codec's codes via
    ``add_sa_codes``; queries are ``codec.query_transform(Q)`` and scores get
    ``codec.query_offset(Q)`` added. When K is not a power of two the scores are computed
    with numpy lookup tables instead (``details`` says which path ran).
    """

    name = "PQVAECodec"

    def __init__(self, bits: int, dim: int, codebook_size: int = 256, seed: int = 0,
                 fit_queries: np.ndarray | None = None, **hyper: Any) -> None:
        from semstore.codec import PQVAECodec  # optional: the benchmark runs without it

        code_bits = math.log2(codebook_size)
        m = bits / code_bits
        if m != int(m):
            raise BaselineError(f"PQVAECodec: {bits} bits is not a multiple of log2({codebook_size})")
        self.bits = bits
        self.alphabet_size = codebook_size
        self.seed = seed
        self.fit_queries = fit_queries
        self.codec = PQVAECodec(dim=dim, num_subvectors=int(m), codebook_size=codebook_size, **hyper)
        self.nbits = int(code_bits) if code_bits == int(code_bits) else None
        self.details = f"M={int(m)} K={codebook_size}" + (" +fit queries" if fit_queries is not None else "")
        self.details += "".join(f", {name}={value}" for name, value in sorted(hyper.items()))
        self._index: Any = None
        self.train_s = 0.0

    def fit(self, train: np.ndarray) -> None:
        start = time.perf_counter()
        self.codec.fit(train, seed=self.seed, queries=self.fit_queries, progress=False)
        self.train_s = time.perf_counter() - start
        self._index = self._adc_index() if self.nbits is not None else None
        self.details += ", ADC: faiss IndexPQ over shared codebook" if self._index is not None \
            else ", ADC: numpy LUT"

    def _adc_index(self) -> Any:
        codebook = _f32(self.codec.codebook)
        m, (k, d) = self.codec.num_subvectors, codebook.shape
        index = faiss.IndexPQ(m * d, m, self.nbits, IP)
        faiss.copy_array_to_vector(np.tile(codebook, (m, 1, 1)).ravel(), index.pq.centroids)
        index.is_trained = True
        return index

    def encode(self, X: np.ndarray) -> np.ndarray:
        return self.codec.encode(_f32(X))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.codec.decode(codes)

    def search(self, Q: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _f32(Q)
        sub = _f32(self.codec.query_transform(q))
        offset = np.asarray(self.codec.query_offset(q), dtype=np.float32)
        if self._index is not None:
            index = faiss.clone_index(self._index)
            index.add_sa_codes(faiss.pack_bitstrings(np.asarray(codes, dtype=np.int32), self.nbits))
            scores, ids = index.search(sub, k)
        else:
            scores, ids = self._lut_search(sub, np.asarray(codes, dtype=np.int64), k)
        return scores + offset[:, None], ids

    def _lut_search(self, sub: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        codebook = _f32(self.codec.codebook)
        m, d = codes.shape[1], codebook.shape[1]
        luts = np.einsum("nmd,kd->nmk", sub.reshape(len(sub), m, d), codebook)
        scores = np.zeros((len(sub), len(codes)), dtype=np.float32)
        for j in range(m):
            scores += luts[:, j, codes[:, j]]
        ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, ids, axis=1), ids

    def symbols(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes).astype(np.int64)

    def bytes_per_vector(self, codes: np.ndarray) -> float:
        return self.codec.bytes_per_vector


class NeuralRerankBaseline(Compressor):
    """The codec of a fitted :class:`PQVAEBaseline` plus its neural re-rank decoder.

    Same codes and same ADC shortlist as the base (it reuses the base's trained codec, so a
    run fits the linear part once); :meth:`decode` is the neural decoder, so the re-ranked
    columns and zero-shot measure it. ``fit`` trains only the decoder: the row's train
    seconds are the base's plus the decoder's (see ``extra_train_s``).
    """

    name = "PQVAECodec+neural"

    def __init__(self, base: PQVAEBaseline, seed: int = 0, **neural: Any) -> None:
        from semstore.codec.neural import NeuralDecoderConfig

        self.base = base
        self.bits = base.bits
        self.alphabet_size = base.alphabet_size
        self.seed = seed
        self.config = NeuralDecoderConfig(**neural)
        self.details = base.details + f", neural decoder hidden={self.config.hidden} blocks={self.config.blocks}"
        self.report: Any = None

    @property
    def extra_train_s(self) -> float:
        """Seconds the base's linear fit took: added to this row's train time."""
        return self.base.train_s

    def fit(self, train: np.ndarray) -> None:
        if not self.base.codec.is_fitted:
            raise BaselineError("PQVAECodec+neural: the base codec must be fitted first")
        self.report = self.base.codec.fit_neural_decoder(train, self.config, seed=self.seed)
        self.details += (f", held-out rel. error {self.report.linear_held_out_error:.4f} -> "
                         f"{self.report.held_out_error:.4f} (epoch {self.report.best_epoch}/{self.report.epochs_run})")

    def encode(self, X: np.ndarray) -> np.ndarray:
        return self.base.encode(X)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.base.codec.refined_decode(codes)

    def search(self, Q: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.base.search(Q, codes, k)

    def symbols(self, codes: np.ndarray) -> np.ndarray:
        return self.base.symbols(codes)

    def bytes_per_vector(self, codes: np.ndarray) -> float:
        return self.base.bytes_per_vector(codes)


def build_methods(bits: int, dim: int, *, rq: dict[str, Any] | None = None, opq_niter: int = 50,
                  opq_fastscan: bool = True, seed: int = 0) -> list[Compressor]:
    """The FAISS / binary methods at ``bits`` bits per vector (those valid for ``dim``).

    ``rq`` holds keyword arguments of :class:`RQBaseline` (beam, train_beam, refine, ...).
    """
    makers = [
        lambda: PQBaseline(bits, dim),
        lambda: PQBaseline(bits, dim, opq=True, opq_niter=opq_niter),
        lambda: RQBaseline(bits, dim, **(rq or {})),
        lambda: FastScanBaseline(bits, dim),
        *([lambda: FastScanBaseline(bits, dim, opq=True, opq_niter=opq_niter)] if opq_fastscan else []),
        lambda: SignBinaryBaseline(bits, dim, seed=seed),
    ]
    methods: list[Compressor] = []
    for make in makers:
        try:
            methods.append(make())
        except BaselineError:
            continue
    return methods
