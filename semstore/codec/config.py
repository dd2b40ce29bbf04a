"""Hyper-parameters of a :class:`~semstore.codec.PQVAECodec`, validated in one place."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


#: Options added after codecs were first stored, with the value that means "as before".
_NEUTRAL_ADDITIONS: dict[str, Any] = {
    "parallel_weight": 1.0,
    "patience": None,
    "kmeans_points_per_centroid": 256,  # FAISS's default, which the first codecs were trained with
    "kmeans_progressive_steps": 10,  # likewise
    "neural_decoder": False,
}


@dataclass(frozen=True)
class CodecConfig:
    """Everything that defines a codec's architecture and training.

    ``dim``, ``num_subvectors`` (M) and ``codebook_size`` (K) fix the code format:
    each vector becomes M integers in ``[0, K)``, i.e. ``M * log2(K)`` bits.
    ``subvector_dim`` (d) is the width of the shared codebook's codewords; it is the rank
    shared by the M decoder blocks (see :mod:`semstore.codec.model`).
    ``beam_size`` is the beam of the residual search that encodes. 12 is the default: on
    MiniLM at 128 bits its codes scored 0.655 / 0.332 / 0.650 (10-recall@10, paired R@1, R@10;
    FAISS RQ at beam 16: 0.653 / 0.329 / 0.638) and encoded 27.5k vectors/s on 2 cores. Beam
    16 gave the same metrics to within noise (0.655 / 0.328 / 0.651; relative squared error
    0.2885 against 0.2900) at 23.9k/s, beam 8 0.653 / 0.332 / 0.646 at 35.3k/s
    (bench/RESULTS.md, ``bench/encode_speed.py``; AMD EPYC with native bfloat16).
    ``train_beam_size`` is the beam used while training.
    Training defaults (beam 8, 12 refinement iterations) were chosen on the full MiniLM split
    at 128 bits: against the earlier beam 4 / 8 iterations (and 16 k-means iterations) they
    moved 10-recall@10, paired R@1 and R@10 from 0.652 / 0.321 / 0.645 to 0.654 / 0.332 / 0.653,
    past FAISS RQ (0.653 / 0.329 / 0.638).
    The initialisation is FAISS's residual quantizer: per stage, a k-means with
    ``kmeans_iterations`` iterations in each of ``kmeans_progressive_steps`` steps of growing
    dimension (FAISS's progressive-dimension k-means) on at most ``kmeans_points_per_centroid``
    residuals per codeword. It is almost all of the fitting time and its cost per stage does not
    depend on M. Issue 20 profiled it (bench/RESULTS.md, "Codec fit time"): with the former
    25 iterations x 10 steps it took 169 of 190 s at M=16 and 837 of 907 s at M=32 (20,000 MiniLM
    vectors, loaded 2-core machine). Measured on the codec_quality split (20,000 / 5,000, M=16):
    10 instead of 25 iterations moved the test relative error by 0.001 (0.2781 / 0.2771, both
    at 64 points per codeword), while 64 instead of 256 points per codeword cost 0.027 (0.2771
    against 0.2505) and 0.024 10-recall@10, so the points stay at 256; 3 instead of 10 steps made
    a stage 3.2x cheaper (its k-means objective 0.7 % higher) for 0.010 test relative error
    (0.2602) and 0.010 10-recall@10, paired R@1 / R@10 unchanged within noise; 10 steps is the
    choice where that matters more than the fitting time.
    ``patience`` stops the refinement once that many iterations in a row failed to lower the
    error on the held-out tenth of the training set (the best iterate is kept either way);
    ``None`` runs all ``iterations``. On the full MiniLM split at 128 bits the held-out error
    was lowest after the first refinement and rose from then on (the decoder's M*D*d free
    values overfit 18,000 vectors), so the last 9 of the 12 iterations only cost time: with
    patience 2 the same codec was fitted in 141 s instead of 186 s.
    ``parallel_weight`` (w >= 1) weighs the reconstruction error along each item's own
    direction w times more than the error across it (ScaNN's score-aware loss); 1 is plain
    squared error.
    ``neural_decoder`` also trains a neural re-rank decoder (:mod:`semstore.codec.neural`) on
    the same vectors after the linear fit: the codes, the ADC scores and the shortlist stay
    those of the linear codec; only the shortlist's order comes from the neural decoder. It is
    kept only if it beats the linear decoder on held-out vectors.
    """

    dim: int
    num_subvectors: int = 16
    codebook_size: int = 256
    subvector_dim: int | None = None
    beam_size: int = 12
    train_beam_size: int | None = 8
    iterations: int = 12
    patience: int | None = 2
    kmeans_iterations: int = 10
    kmeans_points_per_centroid: int = 256
    kmeans_progressive_steps: int = 3
    query_weighting: float = 0.0
    parallel_weight: float = 1.0
    max_train_vectors: int = 100_000
    init: str = "residual-quantizer"
    neural_decoder: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"dim must be a positive integer, got {self.dim!r}")
        if not isinstance(self.num_subvectors, int) or self.num_subvectors < 1:
            raise ValueError(f"num_subvectors must be a positive integer, got {self.num_subvectors!r}")
        if not isinstance(self.codebook_size, int) or not 2 <= self.codebook_size <= 65536:
            raise ValueError(f"codebook_size must be an integer in [2, 65536], got {self.codebook_size!r}")
        if self.subvector_dim is not None and (not isinstance(self.subvector_dim, int) or self.subvector_dim < 1):
            raise ValueError(f"subvector_dim must be a positive integer, got {self.subvector_dim!r}")
        if self.beam_size < 1 or (self.train_beam_size is not None and self.train_beam_size < 1):
            raise ValueError("beam sizes must be >= 1")
        if self.iterations < 0 or self.kmeans_iterations < 1:
            raise ValueError("iterations must be >= 0 and kmeans_iterations >= 1")
        if not isinstance(self.kmeans_progressive_steps, int) or self.kmeans_progressive_steps < 1:
            raise ValueError(
                f"kmeans_progressive_steps must be a positive integer, got {self.kmeans_progressive_steps!r}"
            )
        if not isinstance(self.kmeans_points_per_centroid, int) or self.kmeans_points_per_centroid < 1:
            raise ValueError(
                f"kmeans_points_per_centroid must be a positive integer, got {self.kmeans_points_per_centroid!r}"
            )
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"patience must be None or an integer >= 1, got {self.patience!r}")
        if not isinstance(self.neural_decoder, bool):
            raise ValueError(f"neural_decoder must be true or false, got {self.neural_decoder!r}")
        if self.init not in ("kmeans", "residual-quantizer"):
            raise ValueError(f"init must be 'kmeans' or 'residual-quantizer', got {self.init!r}")
        if not (isinstance(self.parallel_weight, int | float) and 1.0 <= self.parallel_weight <= 1000.0):
            raise ValueError(f"parallel_weight must be a number in [1, 1000], got {self.parallel_weight!r}")
        if not 0.0 <= self.query_weighting <= 1.0:
            raise ValueError(f"query_weighting must be in [0, 1], got {self.query_weighting!r}")

    @property
    def effective_subvector_dim(self) -> int:
        """d: the codeword width; by default min(dim, codebook_size, 256).

        Measured on MiniLM embeddings at 128 bits, d = 256 beat d = 64 on every retrieval
        metric (bench/RESULTS.md); d above the codebook size adds nothing (rank <= K).
        """
        if self.subvector_dim is not None:
            return self.subvector_dim
        return min(self.dim, self.codebook_size, 256)

    @property
    def bits_per_vector(self) -> float:
        return self.num_subvectors * math.log2(self.codebook_size)

    @property
    def code_dtype(self) -> str:
        return "uint8" if self.codebook_size <= 256 else "uint16"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity_dict(self) -> dict[str, Any]:
        """The fields that identify the codec in its content hash.

        Options added after the first release are left out while they hold the value that
        reproduces the earlier behaviour, so the hashes (versions) of existing codecs, which
        stored codes and saved indexes refer to, stay what they were.
        """
        data = self.to_dict()
        for name, neutral in _NEUTRAL_ADDITIONS.items():
            if data.get(name) == neutral:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CodecConfig":
        known = {f for f in cls.__dataclass_fields__}
        # a stored config that predates an option meant that option's neutral value, whatever
        # the default for new codecs is now
        values = {**_NEUTRAL_ADDITIONS, **{k: v for k, v in data.items() if k in known}}
        return cls(**values)
