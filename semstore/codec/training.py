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
    is_anisotropic,
    kmeans,
    plain_search,
    reconstruct,
    stage_codebooks,
    update_stage_books,
)


@dataclass
class FitReport:
    """What a call to :meth:`PQVAECodec.fit` saw and achieved.

    ``held_out_vectors`` of the ``num_train_vectors`` were held out to stop the refinement
    early (none for sets of fewer than 100 vectors: then ``held_out_error`` is ``None`` and
    ``held_out_error_history`` is empty). ``revived_codewords`` counts the distinct stage
    codewords (stage, code) that were unused and revived at least once, so it is at most
    ``num_subvectors * codebook_size``; ``revived_history`` has the same count for each
    refinement iteration.
    """

    num_vectors: int
    num_train_vectors: int
    iterations: int
    seconds: float
    relative_error_history: list[float] = field(default_factory=list)
    held_out_error_history: list[float] = field(default_factory=list)
    revived_codewords: int = 0
    codeword_usage: float = 0.0
    best_iteration: int = 0  # the refinement iteration whose parameters were kept (0: the initial ones)
    held_out_vectors: int = 0
    revived_history: list[int] = field(default_factory=list)
    stage_codewords: int = 0  # num_subvectors * codebook_size: the bound of revived_codewords
    phase_seconds: dict[str, float] = field(default_factory=dict)  # where the time went

    @property
    def held_out_error(self) -> float | None:
        """Best ||y - y_hat||^2 / ||y||^2 on the held-out vectors; ``None`` when none were held out."""
        finite = [e for e in self.held_out_error_history if e == e]
        return min(finite) if finite else None

    @property
    def relative_error(self) -> float:
        """Final ||y - y_hat||^2 / ||y||^2 on the training vectors (working space)."""
        return self.relative_error_history[-1] if self.relative_error_history else float("nan")

    def summary(self) -> str:
        held = self.held_out_error
        if held is None:
            held_text = (
                f"no held-out set: {self.num_train_vectors} vectors are too few "
                f"(at least {5 * _MIN_HELD_OUT} needed), so no early stopping"
            )
        else:
            held_text = f"held out {held:.4f} on {self.held_out_vectors} vectors"
        bound = f" of {self.stage_codewords}" if self.stage_codewords else ""
        return (
            f"trained on {self.num_train_vectors} of {self.num_vectors} vectors in {self.seconds:.1f}s, "
            f"{self.iterations} iterations (kept {self.best_iteration}), relative error {self.relative_error:.4f} "
            f"({held_text}), "
            f"codeword usage {self.codeword_usage:.0%}, revived {self.revived_codewords}{bound} unused stage codewords"
        )


@dataclass
class TrainedParameters:
    codebook: np.ndarray  # (K, d)
    blocks: np.ndarray  # (M, D, d)


def _relative_error(
    targets: np.ndarray, codes: np.ndarray, books: np.ndarray, directions: np.ndarray | None, parallel_weight: float
) -> float:
    """The training loss relative to ||y||^2: squared error plus ``(w-1) <e, u>^2`` along each item's direction u."""
    err = targets - reconstruct(codes, books)
    total = float(np.sum(err * err))
    if is_anisotropic(directions, parallel_weight):
        total += (parallel_weight - 1.0) * float(np.sum(np.einsum("nD,nD->n", err, directions) ** 2))
    return total / max(float(np.sum(targets * targets)), 1e-12)


_MIN_HELD_OUT = 20


def _initial_stage_books(
    train: np.ndarray, config: CodecConfig, rng: np.random.Generator, beam: int
) -> np.ndarray:
    """Stage codebooks to start from.

    ``init="residual-quantizer"`` uses FAISS's residual quantizer (progressive-dimension
    k-means per stage, beam search between stages), which generalises better than plain
    residual k-means; it needs a power-of-two codebook and a few vectors per codeword, so
    small sets (fewer than 4 vectors per codeword or than twice the dimension) fall back to
    plain residual k-means, which copes with any size.
    """
    m_count, k_count = config.num_subvectors, config.codebook_size
    n, dim = train.shape
    nbits = k_count.bit_length() - 1
    # FAISS's progressive-dimension k-means runs a PCA, which needs more vectors than dims.
    if config.init == "residual-quantizer" and k_count == 1 << nbits and n >= max(4 * k_count, 2 * dim):
        import faiss

        quantizer = faiss.ResidualQuantizer(dim, m_count, nbits)
        quantizer.max_beam_size = beam
        quantizer.verbose = False
        quantizer.cp.seed = int(rng.integers(1 << 30))
        quantizer.cp.niter = config.kmeans_iterations
        quantizer.cp.min_points_per_centroid = 1  # small sets are expected; FAISS would warn on stdout
        quantizer.cp.max_points_per_centroid = config.kmeans_points_per_centroid
        quantizer.cp.progressive_dim_steps = config.kmeans_progressive_steps
        # the cross-product tables FAISS builds for its own encoder ((M*K)^2 * D) are never used here
        quantizer.train_type |= faiss.ResidualQuantizer.Skip_codebook_tables
        quantizer.train(np.ascontiguousarray(train, dtype=np.float32))
        return faiss.vector_to_array(quantizer.codebooks).reshape(m_count, k_count, dim).astype(np.float32)
    books = np.empty((m_count, k_count, dim), dtype=np.float32)
    residual = train.copy()
    for m in range(m_count):
        books[m] = kmeans(residual, k_count, config.kmeans_iterations, rng, config.kmeans_points_per_centroid)
        residual -= books[m][assign_nearest(residual, books[m])]
    return books


def _split_validation(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Row indices (train, held out): 10% (at least 20) held out for early stopping; none for tiny sets."""
    held = max(_MIN_HELD_OUT, n // 10)
    if n < 5 * held:
        return np.arange(n), None
    order = rng.permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def _rows(array: np.ndarray | None, rows: np.ndarray | None) -> np.ndarray | None:
    return None if array is None or rows is None else array[rows]


def _usage(codes: np.ndarray, k_count: int) -> float:
    used = [np.unique(codes[:, m]).size for m in range(codes.shape[1])]
    return float(np.mean(used)) / k_count


def train_shared_codebook(
    targets: np.ndarray,
    config: CodecConfig,
    rng: np.random.Generator,
    *,
    num_vectors: int,
    directions: np.ndarray | None = None,
    progress: bool = True,
) -> tuple[TrainedParameters, FitReport]:
    """Fit the shared codebook and decoder blocks to ``targets`` (already in working space).

    ``directions`` (one row per target) are the items' own directions for the anisotropic
    loss (``config.parallel_weight``); without them the loss is plain squared error.
    """
    started = time.perf_counter()
    m_count, k_count = config.num_subvectors, config.codebook_size
    rank = min(config.effective_subvector_dim, k_count, targets.shape[1] * m_count)
    beam = config.train_beam_size or config.beam_size
    total_steps = m_count + config.iterations
    bar = tqdm(total=total_steps, desc="training codec", unit="step", disable=not progress, leave=False)

    # Hold out vectors to stop the refinement when it starts to overfit: a few thousand
    # vectors cannot pin down M*K*D free decoder values, and over-refined codebooks
    # reconstruct new vectors worse than the initial residual k-means did.
    weight = config.parallel_weight
    train_rows, held_rows = _split_validation(targets.shape[0], rng)
    train, train_dirs = targets[train_rows], _rows(directions, train_rows)
    held, held_dirs = _rows(targets, held_rows), _rows(directions, held_rows)

    anisotropic = is_anisotropic(directions, weight)
    # With d >= min(K, M*D) the stacked stage codebooks (K, M*D) always have rank <= d, so the
    # shared-codebook projection is the identity: factorise once, for the kept iterate, instead
    # of after every update (the default: d = K = 256).
    exact_share = rank >= min(k_count, targets.shape[1] * m_count)

    def share(stage_books: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """The stage codebooks in shared-codebook form, and (C, P) where they were computed."""
        if exact_share:
            return stage_books, None
        codebook, blocks = factor_shared(stage_books, rank)
        return stage_codebooks(codebook, blocks), (codebook, blocks)

    def evaluate(
        books: np.ndarray, factors: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, float, float]:
        # one look-up-table search serves the training and the held-out vectors
        lut = None if anisotropic else plain_search(books)
        if factors is None and (lut is None or anisotropic):
            factors = factor_shared(books, rank)  # the numpy search may read C and P
        codebook, blocks = factors if factors is not None else (None, None)
        codes = beam_encode(train, codebook, blocks, beam, stage_books=books, directions=train_dirs, parallel_weight=weight, lut=lut)
        held_error = float("nan")
        if held is not None:
            held_codes = beam_encode(
                held, codebook, blocks, beam, stage_books=books, directions=held_dirs, parallel_weight=weight, lut=lut
            )
            held_error = _relative_error(held, held_codes, books, held_dirs, weight)
        return codes, _relative_error(train, codes, books, train_dirs, weight), held_error

    phases: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - clock
        clock = now

    books = _initial_stage_books(train, config, rng, beam)
    lap("initialisation")
    bar.update(m_count)

    books, factors = share(books)
    lap("shared-codebook factorisation")
    codes, train_error, held_error = evaluate(books, factors)
    lap("encoding")
    history, validation = [train_error], [held_error]
    best_books, best_factors, best_codes = books, factors, codes
    best_score = held_error if held is not None else train_error
    revived_ever = np.zeros((m_count, k_count), dtype=bool)
    revived_history: list[int] = []
    best_iteration = 0
    for iteration in range(1, config.iterations + 1):
        new_books, revived = update_stage_books(train, codes, books, rng, directions=train_dirs, parallel_weight=weight)
        revived_ever |= revived
        revived_history.append(int(revived.sum()))
        lap("codebook updates")
        books, factors = share(new_books)
        lap("shared-codebook factorisation")
        codes, train_error, held_error = evaluate(books, factors)
        lap("encoding")
        history.append(train_error)
        validation.append(held_error)
        score = held_error if held is not None else train_error
        if score < best_score:
            best_score, best_books, best_factors, best_codes, best_iteration = score, books, factors, codes, iteration
        bar.update(1)
        if held is not None:
            bar.set_postfix(rel_err=f"{train_error:.4f}", held_out=f"{held_error:.4f}")
        else:
            bar.set_postfix(rel_err=f"{train_error:.4f}")
        if held is not None and config.patience is not None and iteration - best_iteration >= config.patience:
            break
    bar.close()

    if best_factors is None:
        best_factors = factor_shared(best_books, rank)
        lap("shared-codebook factorisation")
    best = TrainedParameters(*best_factors)
    report = FitReport(
        num_vectors=num_vectors,
        num_train_vectors=targets.shape[0],
        iterations=len(history) - 1,
        seconds=time.perf_counter() - started,
        relative_error_history=history,
        held_out_error_history=validation if held is not None else [],
        revived_codewords=int(revived_ever.sum()),
        revived_history=revived_history,
        stage_codewords=m_count * k_count,
        held_out_vectors=0 if held is None else held.shape[0],
        codeword_usage=_usage(best_codes, k_count),
        best_iteration=best_iteration,
        phase_seconds={name: round(value, 3) for name, value in phases.items()},
    )
    return best, report
