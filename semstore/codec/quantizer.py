"""Numeric kernels of the shared-codebook quantizer: beam encoding, codebook updates, k-means.

Notation (all in the codec's whitened working space, see :mod:`semstore.codec.model`):
``C`` is the shared codebook (K, d); ``P`` holds the M decoder blocks (M, D, d); the
codeword that stage ``m`` contributes for code ``k`` is ``B[m, k] = P[m] @ C[k]`` (a row
of the *stage codebook* ``B`` of shape (M, K, D)). A vector is reconstructed as
``sum_m B[m, codes[m]]``.
"""

from __future__ import annotations

import numpy as np

from semstore.codec.lut_search import LutBeamSearch

_CHUNK = 2048


def stage_codebooks(codebook: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """B[m] = C @ P[m].T for every stage: (M, K, D)."""
    return np.einsum("kd,mDd->mkD", codebook, blocks, optimize=True).astype(np.float32)


def reconstruct(codes: np.ndarray, stage_books: np.ndarray) -> np.ndarray:
    """Sum of the selected stage codewords: (n, D)."""
    n, m_count = codes.shape
    out = np.zeros((n, stage_books.shape[2]), dtype=np.float32)
    for m in range(m_count):
        out += stage_books[m][codes[:, m]]
    return out


def beam_encode(
    targets: np.ndarray,
    codebook: np.ndarray,
    blocks: np.ndarray,
    beam_size: int,
    stage_books: np.ndarray | None = None,
    *,
    directions: np.ndarray | None = None,
    parallel_weight: float = 1.0,
    lut: LutBeamSearch | None = None,
    exact_topk: bool = True,
    bfloat16_products: bool = False,
) -> np.ndarray:
    """Residual beam search for the codes minimising the (anisotropic) reconstruction error.

    The error of a vector with residual ``e = y - sum_m B[m, codes[m]]`` is
    ``||e||^2 + (parallel_weight - 1) <e, u>^2``, where ``u`` (a row of ``directions``) is the
    unit direction of the original embedding: ``parallel_weight > 1`` penalises the error
    along the item itself more than the error across it (the score-aware loss of ScaNN, which
    is what keeps inner-product rankings intact); 1 (or no ``directions``) is plain MSE.
    Stage m scores every shared codeword for every candidate residual through
    ``||r - B[m,k]||^2 = ||r||^2 - 2 <r, B[m,k]> + ||B[m,k]||^2`` and the ``beam_size`` best
    partial code sequences survive to the next stage; ``beam_size=1`` is greedy encoding.
    Plain squared error runs in FAISS's look-up-table kernel (:mod:`~semstore.codec.lut_search`,
    same codes; ``lut`` reuses a prepared one) wherever that applies; there
    ``exact_topk=False`` lets it keep each stage's best candidates approximately and
    ``bfloat16_products=True`` compute its vector-codeword products in bfloat16
    (both faster, with the same mean error to within 0.03 % as measured; see
    :mod:`~semstore.codec.lut_search`).
    """
    books = stage_codebooks(codebook, blocks) if stage_books is None else stage_books
    anisotropic = is_anisotropic(directions, parallel_weight)
    if not anisotropic:
        search = lut or plain_search(books)
        if search is not None:
            return search.encode(targets, beam_size, exact_topk=exact_topk, bfloat16_products=bfloat16_products)
    norms = np.einsum("mkD,mkD->mk", books, books)
    products = _StageProducts(books, codebook, blocks)
    out = np.empty((targets.shape[0], books.shape[0]), dtype=np.int64)
    for start in range(0, targets.shape[0], _CHUNK):
        chunk = np.ascontiguousarray(targets[start : start + _CHUNK], dtype=np.float32)
        units = None
        if anisotropic:
            units = np.ascontiguousarray(directions[start : start + _CHUNK], dtype=np.float32)
        out[start : start + _CHUNK] = _beam_chunk(chunk, units, products, books, norms, beam_size, parallel_weight)
    return out


def is_anisotropic(directions: np.ndarray | None, parallel_weight: float) -> bool:
    """Whether the loss has the score-aware term (directions given and a weight other than 1)."""
    return directions is not None and parallel_weight != 1.0


def plain_search(books: np.ndarray) -> LutBeamSearch | None:
    """FAISS's look-up-table beam search over these stage codebooks, where it applies."""
    return LutBeamSearch(books) if LutBeamSearch.applies(books.shape[0], books.shape[1]) else None


class _StageProducts:
    """``X @ B[m].T`` for a stage, by the cheaper of the two equal formulas: directly
    (D*K multiply-adds) or through the shared codebook (``P[m].T x``, then C: D*d + d*K)."""

    def __init__(self, books: np.ndarray, codebook: np.ndarray, blocks: np.ndarray) -> None:
        k_count, dim = books.shape[1], books.shape[2]
        self._direct = dim * k_count <= blocks.shape[2] * (dim + k_count)
        if self._direct:
            self._books_t = np.ascontiguousarray(books.transpose(0, 2, 1))  # (M, D, K)
        else:
            self._blocks = blocks
            self._codebook_t = np.ascontiguousarray(codebook.T, dtype=np.float32)

    def __call__(self, x: np.ndarray, m: int) -> np.ndarray:
        if self._direct:
            return x @ self._books_t[m]
        return (x @ self._blocks[m]) @ self._codebook_t


def _beam_chunk(
    y: np.ndarray,
    units: np.ndarray | None,
    products: _StageProducts,
    books: np.ndarray,
    norms: np.ndarray,
    beam_size: int,
    parallel_weight: float,
) -> np.ndarray:
    n = y.shape[0]
    m_count, k_count, _ = books.shape
    rows = np.arange(n)[:, None]
    residuals = y.copy()  # (n * beams, D), beam-major within each vector
    squared = np.einsum("nD,nD->n", y, y)[:, None]  # ||r||^2 per (vector, beam)
    extra = parallel_weight - 1.0
    parallel = None if units is None else np.einsum("nD,nD->n", y, units)[:, None]  # <r, u>
    history = np.zeros((n, 1, m_count), dtype=np.int64)
    for m in range(m_count):
        beams = squared.shape[1]
        # one large 2-D product per stage so that numpy hands a single GEMM to BLAS
        dots = products(residuals, m).reshape(n, beams, k_count)
        dots *= -2.0
        dots += squared[:, :, None]
        dots += norms[m]
        cand = dots.reshape(n, beams * k_count)  # ||r - B[m,k]||^2 for every candidate
        if parallel is not None:
            along = parallel[:, :, None] - products(units, m)[:, None, :]  # <r - B[m,k], u>
            along = along.reshape(n, beams * k_count)
            score = cand + extra * along * along
        else:
            score = cand
        keep = min(beam_size, score.shape[1])
        if keep == 1:
            best = np.argmin(score, axis=1)[:, None]
        else:
            best = np.argpartition(score, keep - 1, axis=1)[:, :keep]
        squared = np.take_along_axis(cand, best, axis=1)
        if parallel is not None:
            parallel = np.take_along_axis(along, best, axis=1)
        parent, code = np.divmod(best, k_count)
        source = (rows * beams + parent).reshape(-1)
        residuals = residuals[source] - books[m][code.reshape(-1)]
        history = history[rows, parent]
        history[:, :, m] = code
    final = squared if parallel is None else squared + extra * parallel * parallel
    return history[np.arange(n), np.argmin(final, axis=1)]


def update_stage_books(
    targets: np.ndarray,
    codes: np.ndarray,
    stage_books: np.ndarray,
    rng: np.random.Generator,
    sweeps: int = 2,
    *,
    directions: np.ndarray | None = None,
    parallel_weight: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Block coordinate descent on the stage codebooks with the codes held fixed.

    For each stage, codeword k becomes the minimiser of the loss of :func:`beam_encode` over
    the vectors coded k there, given the other stages' reconstruction ("partial" target p):
    the mean of p under plain MSE; under the anisotropic loss the solution of
    ``(n_k I + (w-1) sum u u^T) b = sum p + (w-1) u <u, p>``, found for all codewords at once
    by a few conjugate-gradient steps (the system's condition number is at most w).
    A codeword that no vector uses is revived at the residual of a badly reconstructed
    vector, so no part of the codebook stays dead; a stage of a set smaller than the codebook
    cannot use more codewords than it has vectors, so it revives at most as many as the
    vectors that share a codeword with another (none when every vector has its own).
    Returns the new stage codebooks and a boolean (M, K) mask of the revived codewords.
    """
    books = stage_books.copy()
    m_count, k_count, dim = books.shape
    anisotropic = is_anisotropic(directions, parallel_weight)
    recon = reconstruct(codes, books)
    revived = np.zeros((m_count, k_count), dtype=bool)
    for _ in range(sweeps):
        for m in range(m_count):
            labels = codes[:, m]
            partial = targets - (recon - books[m][labels])
            if anisotropic:
                sums, counts = _anisotropic_means(labels, partial, directions, books[m], parallel_weight)
            else:
                sums, counts = group_sums(labels, partial, k_count)
                sums /= np.maximum(counts, 1)[:, None]
            used = counts > 0
            new = books[m].copy()
            new[used] = sums[used].astype(np.float32)
            dead = np.flatnonzero(~used)
            # a dead codeword can only win vectors that share a codeword with others
            dead = dead[: max(0, targets.shape[0] - int(used.sum()))]
            if dead.size:
                revived[m, dead] = True
                err = np.einsum("nD,nD->n", partial - new[labels], partial - new[labels])
                worst = np.argsort(err)[::-1][: max(dead.size * 4, dead.size)]
                pick = rng.choice(worst, size=dead.size, replace=worst.size < dead.size)
                noise = rng.standard_normal((dead.size, dim)).astype(np.float32) * 1e-3
                new[dead] = partial[pick] + noise
            recon += new[labels] - books[m][labels]
            books[m] = new
    return books, revived


def _anisotropic_means(
    labels: np.ndarray,
    partial: np.ndarray,
    directions: np.ndarray,
    start: np.ndarray,
    parallel_weight: float,
    iterations: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-codeword minimisers of sum_i ||p_i - b||^2 + (w-1) <p_i - b, u_i>^2 (batched CG)."""
    k_count = start.shape[0]
    extra = parallel_weight - 1.0
    along = np.einsum("nD,nD->n", directions, partial)[:, None]
    rhs, counts = group_sums(labels, partial + extra * directions * along, k_count)

    def apply(books: np.ndarray) -> np.ndarray:
        proj = np.einsum("nD,nD->n", directions, books[labels])[:, None]
        sums, _ = group_sums(labels, directions * proj, k_count)
        return counts[:, None] * books + extra * sums

    solution = start.astype(np.float64)
    residual = rhs - apply(solution)
    direction = residual.copy()
    norm_sq = np.einsum("kD,kD->k", residual, residual)
    for _ in range(iterations):
        image = apply(direction)
        curvature = np.einsum("kD,kD->k", direction, image)
        step = np.divide(norm_sq, curvature, out=np.zeros_like(norm_sq), where=curvature > 1e-30)
        solution += step[:, None] * direction
        residual -= step[:, None] * image
        new_norm_sq = np.einsum("kD,kD->k", residual, residual)
        ratio = np.divide(new_norm_sq, norm_sq, out=np.zeros_like(norm_sq), where=norm_sq > 1e-30)
        direction = residual + ratio[:, None] * direction
        norm_sq = new_norm_sq
    return solution, counts


def group_sums(labels: np.ndarray, values: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-label sums of the rows of ``values`` and per-label counts, without Python loops."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    counts = np.bincount(sorted_labels, minlength=groups)
    sums = np.zeros((groups, values.shape[1]), dtype=np.float64)
    present = np.flatnonzero(counts)
    if present.size:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[present]
        sums[present] = np.add.reduceat(values[order].astype(np.float64), starts, axis=0)
    return sums, counts


def factor_shared(stage_books: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Closest shared-codebook factorisation ``B[m] ~ C @ P[m].T`` with C of width ``rank``.

    Stacking the stage codebooks side by side gives a (K, M*D) matrix whose rank is at most
    d exactly when one (K, d) codebook is shared by all stages; its truncated SVD is the
    least-squares optimal shared codebook (Eckart-Young). The SVD is taken through the
    eigenvectors of the smaller Gram matrix (K x K or M*D x M*D): the left singular vectors
    U_d span the same subspace, ``C @ P.T = U_d U_d^T B`` is the same projection, and the
    cost is ``min(K, M*D)^2 * max(K, M*D)``, linear in M (a full SVD of the (K, M*D) matrix
    took 1.4 s per refinement iteration at M=16, 20,000 MiniLM vectors).
    """
    m_count, k_count, dim = stage_books.shape
    stacked = stage_books.transpose(1, 0, 2).reshape(k_count, m_count * dim).astype(np.float64)
    rank = min(rank, k_count, m_count * dim)
    if k_count <= m_count * dim:
        _, vecs = np.linalg.eigh(stacked @ stacked.T)
        left = vecs[:, ::-1][:, :rank]  # (K, d), orthonormal
        right = left.T @ stacked  # (d, M*D): rows are s_i * v_i^T
        scale = np.linalg.norm(right, axis=1)
        keep = scale > 1e-12 * max(float(scale.max(initial=0.0)), 1e-300)
        right[keep] /= scale[keep, None]
        right[~keep] = 0.0
        codebook = left * np.where(keep, scale, 0.0)
    else:
        gram = stacked.T @ stacked
        vals, vecs = np.linalg.eigh(gram)
        right = vecs[:, ::-1][:, :rank].T
        codebook = stacked @ right.T
    blocks = right.reshape(rank, m_count, dim).transpose(1, 2, 0)  # (M, D, d)
    return codebook.astype(np.float32), np.ascontiguousarray(blocks, dtype=np.float32)


def assign_nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) for every point."""
    norms = np.einsum("kD,kD->k", centroids, centroids)
    out = np.empty(points.shape[0], dtype=np.int64)
    for start in range(0, points.shape[0], _CHUNK):
        chunk = points[start : start + _CHUNK]
        out[start : start + _CHUNK] = np.argmin(norms[None, :] - 2.0 * chunk @ centroids.T, axis=1)
    return out


def kmeans(
    points: np.ndarray, k: int, iterations: int, rng: np.random.Generator, max_points_per_centroid: int = 256
) -> np.ndarray:
    """k-means centroids (k, D) of ``points`` (on a sample of at most ``max_points_per_centroid * k``);
    works for any n, including n < k."""
    n = points.shape[0]
    if n <= k:
        extra = rng.choice(n, size=k - n, replace=True) if k > n else np.empty(0, dtype=np.int64)
        base = np.concatenate([points, points[extra]])
        scale = float(points.std()) if n > 1 else 1.0
        noise = rng.standard_normal(base.shape).astype(np.float32) * (1e-2 * scale + 1e-6)
        noise[:n] = 0.0
        return (base + noise).astype(np.float32)
    import faiss

    km = faiss.Kmeans(
        points.shape[1], k, niter=iterations, seed=int(rng.integers(1 << 30)),
        verbose=False, min_points_per_centroid=1, max_points_per_centroid=max_points_per_centroid,
    )
    km.train(np.ascontiguousarray(points, dtype=np.float32))
    return km.centroids.astype(np.float32)
