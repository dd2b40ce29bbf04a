r"""PQ-VAE codec with one codebook shared by all sub-vectors, built for exact ADC search.

The model (PQVAE-shared of "Compression Beyond Pixels", arXiv 2509.05925, with a decoder
designed so that search never has to decode):

* **encoder**: an embedding ``x`` (dim D) is centred and mapped into the working space
  ``y = T (x - mu)``, where ``T = A^{1/2}`` and ``A = (1-w) I + w S`` blends the identity
  with the normalised second-moment matrix ``S`` of query-like vectors (``w`` =
  ``query_weighting``). Then for m = 1..M the encoder emits sub-vector ``z_m = P_m^T r_{m-1}``
  (``r_0 = y``; ``r_m`` is what stages 1..m leave unexplained);
* **quantiser**: each ``z_m`` is replaced by the index ``i_m`` of a codeword of the ONE
  shared codebook ``C`` (K x d), the one whose decoded contribution is nearest to the residual,
  ``argmin_k ||r_{m-1} - P_m c_k||^2 = argmax_k <z_m, c_k> - ||P_m c_k||^2 / 2``
  (residual beam search keeps the best ``beam_size`` partial codes);
* **decoder** (linear in the selected codewords):
  ``x_hat = mu + T^{-1} sum_m P_m c_{i_m}``, returned L2-normalised by :meth:`decode`.

**Why the weighting**: ``||y - y_hat||^2 = (x - x_hat)^T A (x - x_hat)``, and with ``w = 1``
this is ``E_q[<q, x - x_hat>^2]`` for queries of second moment S: training minimises the
error of the inner products search actually computes, not just the vector's distance.

**ADC (asymmetric distance computation)**: because the decoder is linear,

.. math:: \langle q, \hat x\rangle = \langle q, \mu\rangle + \sum_m \langle P_m^T T^{-1} q, c_{i_m}\rangle

so a float query becomes ``query_offset(q) = <q, mu>`` plus M sub-queries
``q'_m = P_m^T T^{-1} q`` (:meth:`query_transform`, shape (M*d,)). Scoring an item is M
look-ups in per-query tables ``LUT[m, k] = <q'_m, c_k>``: a FAISS ``IndexPQ`` over
dimension M*d whose every sub-quantizer holds the shared codebook computes exactly this,
so ADC scores equal ``<q, decode(codes, normalize=False)>`` up to float rounding.

The same stage structure read another way: stage m's codebook is ``P_m C^T``, a rank-d
image of the shared codebook, so the codec is an additive (residual) quantiser whose M
codebooks are tied through C.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from semstore.codec.config import CodecConfig
from semstore.codec.lut_search import LutBeamSearch, native_bfloat16
from semstore.codec.neural import MIN_TRAIN_VECTORS, NEURAL_PREFIX, NeuralDecoder, NeuralDecoderConfig, NeuralFitReport, fit_neural_decoder
from semstore.codec.quantizer import beam_encode, plain_search, stage_codebooks
from semstore.codec.training import FitReport, train_shared_codebook

FORMAT = "semstore-pqvae-shared/1"
_TENSORS = ("mean", "transform", "inverse_transform", "codebook", "blocks")


class CodecNotFittedError(RuntimeError):
    """The codec was used before :meth:`PQVAECodec.fit` or :meth:`PQVAECodec.load`."""


def _as_matrix(name: str, array: Any, dim: int) -> np.ndarray:
    data = np.asarray(array)
    if data.ndim == 1 and data.shape[0] == dim:
        data = data[None, :]
    if data.ndim != 2 or data.shape[1] != dim:
        raise ValueError(f"{name} must have shape (n, {dim}), got {tuple(np.shape(array))}")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {data.dtype}")
    data = np.ascontiguousarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return data


class PQVAECodec:
    """Compresses embeddings to ``num_subvectors`` codes of ``log2(codebook_size)`` bits each.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((500, 32)).astype("float32")
    >>> codec = PQVAECodec(dim=32, num_subvectors=4, codebook_size=16).fit(X, seed=0, progress=False)
    >>> codes = codec.encode(X[:3])
    >>> codes.shape, codes.dtype.name, codec.bits_per_vector
    ((3, 4), 'uint8', 16.0)
    >>> codec.decode(codes).shape
    (3, 32)
    """

    def __init__(
        self, dim: int, num_subvectors: int = 16, codebook_size: int = 256,
        *, neural_config: NeuralDecoderConfig | None = None, **hyper: Any,
    ) -> None:  # fmt: skip
        self.config = CodecConfig(dim=dim, num_subvectors=num_subvectors, codebook_size=codebook_size, **hyper)
        self.neural_config = neural_config
        self.report: FitReport | None = None
        self.neural_decoder: NeuralDecoder | None = None
        self.neural_report: NeuralFitReport | None = None
        self._params: dict[str, np.ndarray] | None = None
        self._cache: dict[str, Any] = {}
        self._content_hash: str | None = None

    # -- shape of the code -------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def num_subvectors(self) -> int:
        return self.config.num_subvectors

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def subvector_dim(self) -> int:
        """Width d of the shared codewords (and of each sub-query of :meth:`query_transform`)."""
        return int(self._require()["codebook"].shape[1])

    @property
    def bits_per_vector(self) -> float:
        return self.config.bits_per_vector

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(self.config.code_dtype)

    @property
    def bytes_per_vector(self) -> int:
        """Bytes of one stored code row (fixed-length layout)."""
        return self.num_subvectors * self.code_dtype.itemsize

    @property
    def is_fitted(self) -> bool:
        return self._params is not None

    @property
    def codebook(self) -> np.ndarray:
        """The shared codebook C, float32 (codebook_size, subvector_dim)."""
        return self._require()["codebook"]

    @property
    def content_hash(self) -> str:
        """SHA-256 of the config and the weights that define codes and ADC scores: the codec's
        version, stable across save/load. An attached neural decoder is not part of it (it
        changes no code); it carries its own hash, checked when the file is read."""
        if self._content_hash is None:
            params = self._require()
            digest = hashlib.sha256(json.dumps(self.config.identity_dict(), sort_keys=True).encode())
            for name in _TENSORS:
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(params[name]).tobytes())
            self._content_hash = digest.hexdigest()
        return self._content_hash

    # -- training ------------------------------------------------------------------------
    def fit(self, X: Any, seed: int = 0, *, queries: Any | None = None, progress: bool = True) -> "PQVAECodec":
        """Train on embeddings ``X`` (n, dim); deterministic for a ``seed``. Returns self.

        ``queries`` (optional, (m, dim)) are query-like vectors, e.g. text embeddings of a
        generic vocabulary for an image collection: the weighting of the training error then
        uses the average of their (trace-normalised) second moment and the data's, so both
        text -> image and image -> image scores are protected. Without them the training
        vectors stand in for queries.
        The report of the run is kept in :attr:`report`. With ``neural_decoder`` in the config a
        neural re-rank decoder is then trained on the same vectors (:meth:`fit_neural_decoder`).
        """
        data = _as_matrix("X", X, self.dim)
        if data.shape[0] < 2:
            raise ValueError(f"need at least 2 vectors to train a codec, got {data.shape[0]}")
        rng = np.random.default_rng(seed)
        train = data
        if data.shape[0] > self.config.max_train_vectors:
            train = data[np.sort(rng.choice(data.shape[0], self.config.max_train_vectors, replace=False))]
        query_sets = [train] if queries is None else [train, _as_matrix("queries", queries, self.dim)]

        mean = train.mean(axis=0)
        transform, inverse = _weighting(query_sets, self.config.query_weighting)
        targets = ((train - mean) @ transform).astype(np.float32)
        trained, report = train_shared_codebook(
            targets, self.config, rng, num_vectors=data.shape[0],
            directions=self._directions(train, inverse), progress=progress,
        )
        self._set_params(
            {
                "mean": mean.astype(np.float32),
                "transform": transform,
                "inverse_transform": inverse,
                "codebook": trained.codebook,
                "blocks": trained.blocks,
            }
        )
        self.report = report
        self.neural_decoder = self.neural_report = None
        if self.config.neural_decoder and len(train) >= MIN_TRAIN_VECTORS:  # (a tiny first ingest gets none)
            self.fit_neural_decoder(train, seed=seed, progress=progress)
        return self

    def fit_neural_decoder(
        self, X: Any, config: NeuralDecoderConfig | None = None, *, seed: int = 0, progress: bool = False,
    ) -> NeuralFitReport:  # fmt: skip
        """Train the neural re-rank decoder on embeddings ``X``; returns its report.

        The decoder is attached only when it beat the linear decoder on the held-out vectors
        (``report.best_epoch > 0``); otherwise the codec keeps re-ranking with the linear
        decoder and pays nothing for the attempt at search time. The codes are not touched
        (``content_hash`` stays the same), so a decoder can be added to a codec whose codes are
        already stored. ``config`` defaults to the one given to the constructor, else
        :class:`~semstore.codec.neural.NeuralDecoderConfig`'s defaults.
        """
        data = _as_matrix("X", X, self.dim)
        codes = self.encode(data, exact=True)
        decoder, report = fit_neural_decoder(
            data, codes, self.decode(codes, normalize=False), self.codebook_size,
            config or self.neural_config, seed=seed, progress=progress,
        )  # fmt: skip
        self.neural_report = report
        if report.best_epoch > 0:
            self._attach_neural(decoder)
        return report

    def _attach_neural(self, decoder: NeuralDecoder) -> None:
        if decoder.dim != self.dim or decoder.num_subvectors != self.num_subvectors or decoder.codebook_size != self.codebook_size:
            raise ValueError("the neural decoder does not match the codec's shape")
        decoder.bind(self._decoder_books(), self._require()["mean"])
        self.neural_decoder = decoder

    # -- coding --------------------------------------------------------------------------
    def encode(self, X: Any, *, beam_size: int | None = None, exact: bool = False) -> np.ndarray:
        """Codes (n, num_subvectors), uint8 when codebook_size <= 256 else uint16.

        ``beam_size`` overrides the configured beam. By default the search takes two measured
        shortcuts (:mod:`~semstore.codec.lut_search`): FAISS's approximate top-k for each
        stage's survivors, and the vector-codeword products in bfloat16 where the CPU
        multiplies bfloat16 natively (same mean error as measured, but about 15 % of the codes
        differ). ``exact=True`` runs the exact beam search that training runs (exact top-k,
        float32 products): about half the speed, and codes that do not depend on the CPU's
        bfloat16 support.
        """
        params = self._require()
        data = _as_matrix("X", X, self.dim)
        targets = self._working_space(data)
        codes = beam_encode(
            targets, params["codebook"], params["blocks"], beam_size or self.config.beam_size,
            stage_books=self._stage_books(),
            directions=self._directions(data, params["inverse_transform"]),
            parallel_weight=self.config.parallel_weight,
            lut=self._lut_search(),
            exact_topk=exact,
            bfloat16_products=not exact and native_bfloat16(),
        )
        return codes.astype(self.code_dtype)

    def decode(self, codes: Any, *, normalize: bool = True) -> np.ndarray:
        """Float32 (n, dim) reconstructions; L2-normalised unless ``normalize=False``.

        ``normalize=False`` gives the linear reconstruction whose inner products ADC computes.
        """
        params = self._require()
        checked = self.validate_codes(codes)
        books = self._decoder_books()
        out = np.broadcast_to(params["mean"], (checked.shape[0], self.dim)).copy()
        for m in range(self.num_subvectors):
            out += books[m][checked[:, m]]
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def refined_decode(self, codes: Any, *, normalize: bool = True) -> np.ndarray:
        """The best reconstructions the codec has: the neural decoder's when one is attached,
        else :meth:`decode`'s. What re-ranking, classification and duplicate detection score.

        Only the order of a shortlist changes with it: ADC (the shortlist) always scores the
        linear reconstruction.
        """
        if self.neural_decoder is None:
            return self.decode(codes, normalize=normalize)
        checked = self.validate_codes(codes)
        out = self.neural_decoder.refine(checked, self.decode(checked, normalize=False))
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def validate_codes(self, codes: Any) -> np.ndarray:
        """Check shape and range of ``codes``; returns them as an int64 array."""
        array = np.asarray(codes)
        if array.ndim == 1 and array.shape[0] == self.num_subvectors:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != self.num_subvectors:
            raise ValueError(f"codes must have shape (n, {self.num_subvectors}), got {tuple(np.shape(codes))}")
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"codes must be integers, got dtype {array.dtype}")
        array = array.astype(np.int64)
        if array.size and (array.min() < 0 or array.max() >= self.codebook_size):
            raise ValueError(f"codes out of range [0, {self.codebook_size}): min {array.min()}, max {array.max()}")
        return array

    # -- search support ------------------------------------------------------------------
    def query_transform(self, Q: Any) -> np.ndarray:
        """Sub-queries ``q'_m = P_m^T T^{-1} q`` concatenated: float32 (n, M*d).

        ``<q, decode(c, normalize=False)> == query_offset(q) + sum_m <q'_m, codebook[c_m]>``.
        """
        return self.query_parts(Q)[0]

    @property
    def query_matrix(self) -> np.ndarray:
        """The linear map of :meth:`query_transform`, float32 (dim, M*d): ``T^{-1} [P_1 ... P_M]``
        (a read-only view; see :meth:`query_parts`)."""
        return self._query_and_mean()[:, :-1]

    def query_parts(self, Q: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(query_transform(Q), query_offset(Q))`` from one check and one matrix product.

        The search path's form: a single query costs one pass over ``[G | mu]`` instead of
        two validations and two products.
        """
        queries = _as_matrix("Q", Q, self.dim)
        both = queries @ self._query_and_mean()
        return np.ascontiguousarray(both[:, :-1]), np.ascontiguousarray(both[:, -1])

    def _query_and_mean(self) -> np.ndarray:
        """``[G | mu]``, float32 (dim, M*d + 1), folded once per codec so a search costs one
        matrix product instead of an einsum over the (M, D, d) blocks on every call."""
        if "query" not in self._cache:
            params = self._require()
            folded = np.einsum("ED,mDd->Emd", params["inverse_transform"], params["blocks"], optimize=True)
            joined = np.concatenate([folded.reshape(self.dim, -1), params["mean"][:, None]], axis=1)
            joined = np.ascontiguousarray(joined, dtype=np.float32)
            joined.flags.writeable = False
            self._cache["query"] = joined
        return self._cache["query"]

    @property
    def mean(self) -> np.ndarray:
        """The codec's centre mu, float32 (dim,): ``query_offset(q) == <q, mu>``."""
        return self._require()["mean"]

    def query_offset(self, Q: Any) -> np.ndarray:
        """The part of every ADC score that does not depend on the item: ``<q, mu>``, (n,)."""
        params = self._require()
        return (_as_matrix("Q", Q, self.dim) @ params["mean"]).astype(np.float32)

    # -- persistence ---------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The codec as one safetensors file: config + weights + content hash, no pickle."""
        from safetensors.numpy import save

        params = self._require()
        metadata = {
            "format": FORMAT,
            "config": json.dumps(self.config.to_dict(), sort_keys=True),
            "content_hash": self.content_hash,
            "report": json.dumps(self.report.__dict__ if self.report else {}, default=float),
        }
        tensors = {name: np.ascontiguousarray(params[name]) for name in _TENSORS}
        if self.neural_decoder is not None:
            tensors.update(self.neural_decoder.to_tensors())
            metadata["neural_config"] = self.neural_decoder.config_json()
            metadata["neural_hash"] = self.neural_decoder.content_hash
        return save(tensors, metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes) -> "PQVAECodec":
        """Load a codec written by :meth:`to_bytes`; checks format and content hash."""
        from safetensors.numpy import load

        try:
            tensors = load(data)
            metadata = _read_metadata(data)
        except Exception as exc:  # safetensors raises several internal error types
            raise ValueError(f"not a semstore codec file: {exc}") from exc
        if metadata.get("format") != FORMAT:
            raise ValueError(f"not a semstore codec file (format {metadata.get('format')!r})")
        config = CodecConfig.from_dict(json.loads(metadata["config"]))
        codec = cls.__new__(cls)
        codec.config = config
        codec.report = None
        codec.neural_config = None
        codec.neural_decoder = codec.neural_report = None
        codec._cache = {}
        codec._content_hash = None
        missing = [name for name in _TENSORS if name not in tensors]
        if missing:
            raise ValueError(f"codec file lacks tensors {missing}")
        codec._set_params({name: tensors[name] for name in _TENSORS})
        if codec.content_hash != metadata.get("content_hash"):
            raise ValueError("codec file is corrupt: content hash does not match its weights")
        if "neural_config" in metadata:
            try:
                codec._attach_neural(NeuralDecoder.from_tensors(tensors, metadata["neural_config"]))
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"codec file has a broken neural decoder: {exc}") from exc
            if codec.neural_decoder.content_hash != metadata.get("neural_hash"):
                raise ValueError("codec file is corrupt: the neural decoder's hash does not match its weights")
        elif any(name.startswith(NEURAL_PREFIX) for name in tensors):
            raise ValueError("codec file has neural decoder tensors but no neural_config")
        return codec

    def save(self, path: str | Path) -> Path:
        """Write the codec to ``path`` atomically (temp file + rename)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(self.to_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path: str | Path) -> "PQVAECodec":
        """Read a codec saved by :meth:`save`."""
        return cls.from_bytes(Path(path).read_bytes())

    def __repr__(self) -> str:
        state = f"version={self.content_hash[:12]}" if self.is_fitted else "unfitted"
        neural = ", neural decoder" if self.neural_decoder is not None else ""
        return (
            f"PQVAECodec(dim={self.dim}, num_subvectors={self.num_subvectors}, "
            f"codebook_size={self.codebook_size}, bits={self.bits_per_vector:g}, {state}{neural})"
        )

    # -- internals -----------------------------------------------------------------------
    def _require(self) -> dict[str, np.ndarray]:
        if self._params is None:
            raise CodecNotFittedError("the codec is not trained: call fit() or load() first")
        return self._params

    def _set_params(self, params: dict[str, np.ndarray]) -> None:
        self._params = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in params.items()}
        self._cache = {}
        self._content_hash = None

    def _working_space(self, data: np.ndarray) -> np.ndarray:
        """``y = T (x - mu)``; the product is skipped when T is the identity (no query weighting):
        on MiniLM at beam 4 it took 13-20 % of the encoding time. The product is small, but
        numpy's OpenBLAS threads keep spinning after it (see :mod:`~semstore.codec.lut_search`)."""
        params = self._require()
        centred = data - params["mean"]
        if self.config.query_weighting == 0.0:  # _weighting's T is then exactly the identity
            return centred
        return centred @ params["transform"]

    def _directions(self, data: np.ndarray, inverse: np.ndarray) -> np.ndarray | None:
        """Each item's unit direction seen from the working space, ``T^{-1} x / ||x||``.

        The error of the original vector along its own direction, ``<x - x_hat, x/||x||>``,
        is ``<e, T^{-1} x/||x||>`` for the working-space error e (T is symmetric). None when
        the loss is plain squared error.
        """
        if self.config.parallel_weight == 1.0:
            return None
        units = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
        return (units @ inverse).astype(np.float32)

    def _stage_books(self) -> np.ndarray:
        if "stage" not in self._cache:
            params = self._require()
            self._cache["stage"] = stage_codebooks(params["codebook"], params["blocks"])
        return self._cache["stage"]

    def _lut_search(self) -> LutBeamSearch | None:
        """FAISS look-up-table beam search over this codec's stage codebooks, when it applies."""
        if "lut" not in self._cache:
            self._cache["lut"] = plain_search(self._stage_books())
        return self._cache["lut"]

    def _decoder_books(self) -> np.ndarray:
        if "decoder" not in self._cache:
            inverse = self._require()["inverse_transform"]
            self._cache["decoder"] = (self._stage_books() @ inverse).astype(np.float32)
        return self._cache["decoder"]


def _weighting(query_sets: list[np.ndarray], weight: float) -> tuple[np.ndarray, np.ndarray]:
    """``T = A^{1/2}`` and ``T^{-1}`` for ``A = (1-w) I + w S``.

    S is the mean over ``query_sets`` of each set's second moment, each scaled to trace D.
    """
    dim = query_sets[0].shape[1]
    if weight == 0.0:
        eye = np.eye(dim, dtype=np.float32)
        return eye, eye.copy()
    second = np.zeros((dim, dim))
    for queries in query_sets:
        moment = (queries.T.astype(np.float64) @ queries.astype(np.float64)) / queries.shape[0]
        second += moment / max(np.trace(moment) / dim, 1e-12) / len(query_sets)
    blended = (1.0 - weight) * np.eye(dim) + weight * second
    vals, vecs = np.linalg.eigh(blended)
    vals = np.maximum(vals, 1e-4)
    root = (vecs * np.sqrt(vals)) @ vecs.T
    inv_root = (vecs / np.sqrt(vals)) @ vecs.T
    return root.astype(np.float32), inv_root.astype(np.float32)


def _read_metadata(data: bytes) -> dict[str, str]:
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    return header.get("__metadata__", {}) or {}
