"""The training loop of the shared-codebook codec, kept apart from the model itself.

Training alternates three exact steps on a mean-squared error measured in the codec's
query-weighted working space (so minimising it minimises the expected squared error of
query inner products, see :mod:`semstore.codec.model`):

1. **encode**: residual beam search picks each vector's M codes;
2. **decode update**: with the codes fixed, every stage codeword becomes the mean of what it
   has to explain (block coordinate descent, the least-squares optimum per block); unused
   codewords are revived at poorly reconstructed vectors;
3. **share**: the M stage codebooks are projected onto the closest shared-codebook form
   ``C @ P[m].T`` by a truncated SVD.

It starts from residual k-means (each stage clusters what the previous stages left), which
is already a strong residual quantizer; the alternation then lets every stage adapt to all
the others, something greedy residual training never does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from semstore.codec.config import CodecConfig
from semstore.codec.quantizer import (
    assign_nearest,
    beam_encode,
    factor_shared,
    kmeans,
    reconstruct,
    stage_codebooks,
    update_stage_books,
)


@dataclass
class FitReport:
    """What a call to :meth:`PQVAECodec.fit` saw and achieved."""

    num_vectors: int
    num_train_vectors: int
    iterations: int
    seconds: float
    relative_error_history: list[float] = field(default_factory=list)
    revived_codewords: int = 0
    codeword_usage: float = 0.0

    @property
    def relative_error(self) -> float:
        """Final ||y - y_hat||^2 / ||y||^2 on the training vectors (working space)."""
        return self.relative_error_history[-1] if self.relative_error_history else float("nan")

    def summary(self) -> str:
        return (
            f"trained on {self.num_train_vectors} of {self.num_vectors} vectors in {self.seconds:.1f}s, "
            f"{self.iterations} iterations, relative error {self.relative_error:.4f}, "
            f"codeword usage {self.codeword_usage:.0%}, revived {self.revived_codewords}"
        )


@dataclass
class TrainedParameters:
    codebook: np.ndarray  # (K, d)
    blocks: np.ndarray  # (M, D, d)


def _relative_error(targets: np.ndarray, codes: np.ndarray, books: np.ndarray) -> float:
    err = targets - reconstruct(codes, books)
    return float(np.sum(err * err) / max(np.sum(targets * targets), 1e-12))


def _usage(codes: np.ndarray, k_count: int) -> float:
    used = [np.unique(codes[:, m]).size for m in range(codes.shape[1])]
    return float(np.mean(used)) / k_count


def train_shared_codebook(
    targets: np.ndarray,
    config: CodecConfig,
    rng: np.random.Generator,
    *,
    num_vectors: int,
    progress: bool = True,
) -> tuple[TrainedParameters, FitReport]:
    """Fit the shared codebook and decoder blocks to ``targets`` (already in working space)."""
    started = time.perf_counter()
    m_count, k_count = config.num_subvectors, config.codebook_size
    rank = min(config.effective_subvector_dim, k_count, targets.shape[1] * m_count)
    beam = config.train_beam_size or config.beam_size
    total_steps = m_count + config.iterations
    bar = tqdm(total=total_steps, desc="training codec", unit="step", disable=not progress, leave=False)

    books = np.empty((m_count, k_count, targets.shape[1]), dtype=np.float32)
    residual = targets.copy()
    for m in range(m_count):
        books[m] = kmeans(residual, k_count, config.kmeans_iterations, rng)
        residual -= books[m][assign_nearest(residual, books[m])]
        bar.update(1)

    codebook, blocks = factor_shared(books, rank)
    books = stage_codebooks(codebook, blocks)
    codes = beam_encode(targets, codebook, blocks, beam, stage_books=books)
    best_error = _relative_error(targets, codes, books)
    best = TrainedParameters(codebook, blocks)
    history = [best_error]
    revived_total = 0
    for _ in range(config.iterations):
        new_books, revived = update_stage_books(targets, codes, books, rng)
        revived_total += revived
        codebook, blocks = factor_shared(new_books, rank)
        books = stage_codebooks(codebook, blocks)
        codes = beam_encode(targets, codebook, blocks, beam, stage_books=books)
        error = _relative_error(targets, codes, books)
        history.append(error)
        if error < best_error:
            best_error, best = error, TrainedParameters(codebook, blocks)
        bar.update(1)
        bar.set_postfix(rel_err=f"{error:.4f}")
    bar.close()

    final_codes = beam_encode(targets, best.codebook, best.blocks, config.beam_size)
    report = FitReport(
        num_vectors=num_vectors,
        num_train_vectors=targets.shape[0],
        iterations=config.iterations,
        seconds=time.perf_counter() - started,
        relative_error_history=history,
        revived_codewords=revived_total,
        codeword_usage=_usage(final_codes, k_count),
    )
    return best, report
