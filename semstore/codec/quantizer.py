"""Numeric kernels of the shared-codebook quantizer: beam encoding, codebook updates, k-means.

Notation (all in the codec's whitened working space, see :mod:`semstore.codec.model`):
``C`` is the shared codebook (K, d); ``P`` holds the M decoder blocks (M, D, d); the
codeword that stage ``m`` contributes for code ``k`` is ``B[m, k] = P[m] @ C[k]`` (a row
of the *stage codebook* ``B`` of shape (M, K, D)). A vector is reconstructed as
``sum_m B[m, codes[m]]``.
"""

from __future__ import annotations

import numpy as np

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
) -> np.ndarray:
    """Residual beam search for the codes minimising ``||y - sum_m B[m, codes[m]]||^2``.

    Stage m projects each candidate residual through its decoder block (``z = P[m].T r``,
    the encoder output for that sub-vector) and picks among the shared codewords by
    ``||r - P[m] c||^2 = ||r||^2 - 2 <z, c> + ||P[m] c||^2``; the ``beam_size`` best partial
    code sequences survive to the next stage. ``beam_size=1`` is greedy residual encoding.
    Projecting first costs D*d + d*K multiply-adds per stage instead of D*K.
    """
    books = stage_codebooks(codebook, blocks) if stage_books is None else stage_books
    norms = np.einsum("mkD,mkD->mk", books, books)
    codebook_t = np.ascontiguousarray(codebook.T, dtype=np.float32)
    out = np.empty((targets.shape[0], books.shape[0]), dtype=np.int64)
    for start in range(0, targets.shape[0], _CHUNK):
        chunk = np.ascontiguousarray(targets[start : start + _CHUNK], dtype=np.float32)
        out[start : start + _CHUNK] = _beam_chunk(chunk, codebook_t, blocks, books, norms, beam_size)
    return out


def _beam_chunk(
    y: np.ndarray, codebook_t: np.ndarray, blocks: np.ndarray, books: np.ndarray, norms: np.ndarray, beam_size: int
) -> np.ndarray:
    n, dim = y.shape
    m_count, k_count, _ = books.shape
    rows = np.arange(n)[:, None]
    residuals = y.copy()  # (n * beams, D), beam-major within each vector
    errors = np.einsum("nD,nD->n", y, y)[:, None]  # (n, beams)
    history = np.zeros((n, 1, m_count), dtype=np.int64)
    for m in range(m_count):
        beams = errors.shape[1]
        # 2-D products so that numpy hands one large GEMM to BLAS.
        dots = ((residuals @ blocks[m]) @ codebook_t).reshape(n, beams * k_count)
        cand = np.repeat(errors, k_count, axis=1) - 2.0 * dots + np.tile(norms[m], beams)
        keep = min(beam_size, cand.shape[1])
        if keep == 1:
            best = np.argmin(cand, axis=1)[:, None]
        else:
            best = np.argpartition(cand, keep - 1, axis=1)[:, :keep]
        errors = np.take_along_axis(cand, best, axis=1)
        parent, code = np.divmod(best, k_count)
        source = (rows * beams + parent).reshape(-1)
        residuals = residuals[source] - books[m][code.reshape(-1)]
        history = history[rows, parent]
        history[:, :, m] = code
    return history[np.arange(n), np.argmin(errors, axis=1)]


def update_stage_books(
    targets: np.ndarray,
    codes: np.ndarray,
    stage_books: np.ndarray,
    rng: np.random.Generator,
    sweeps: int = 2,
) -> tuple[np.ndarray, int]:
    """Block coordinate descent on the stage codebooks with the codes held fixed.

    For each stage the optimal codeword k is the mean of ``y - (reconstruction from the
    other stages)`` over the vectors coded k there. A codeword that no vector uses is
    revived at the residual of a badly reconstructed vector, so no part of the codebook
    stays dead. Returns the new stage codebooks and the number of revived codewords.
    """
    books = stage_books.copy()
    m_count, k_count, dim = books.shape
    recon = reconstruct(codes, books)
    revived = 0
    for _ in range(sweeps):
        for m in range(m_count):
            partial = targets - (recon - books[m][codes[:, m]])
            sums, counts = group_sums(codes[:, m], partial, k_count)
            used = counts > 0
            new = books[m].copy()
            new[used] = (sums[used] / counts[used, None]).astype(np.float32)
            dead = np.flatnonzero(~used)
            if dead.size:
                revived += int(dead.size)
                err = np.einsum("nD,nD->n", partial - new[codes[:, m]], partial - new[codes[:, m]])
                worst = np.argsort(err)[::-1][: max(dead.size * 4, dead.size)]
                pick = rng.choice(worst, size=dead.size, replace=worst.size < dead.size)
                noise = rng.standard_normal((dead.size, dim)).astype(np.float32) * 1e-3
                new[dead] = partial[pick] + noise
            recon += new[codes[:, m]] - books[m][codes[:, m]]
            books[m] = new
    return books, revived


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
    least-squares optimal shared codebook (Eckart-Young).
    """
    m_count, k_count, dim = stage_books.shape
    stacked = stage_books.transpose(1, 0, 2).reshape(k_count, m_count * dim).astype(np.float64)
    rank = min(rank, k_count, m_count * dim)
    if k_count <= m_count * dim:
        u, s, vt = np.linalg.svd(stacked, full_matrices=False)
        codebook = u[:, :rank] * s[:rank]
        right = vt[:rank]
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


def kmeans(points: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """k-means centroids (k, D) of ``points``; works for any n, including n < k."""
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
        verbose=False, min_points_per_centroid=1, max_points_per_centroid=256,
    )
    km.train(np.ascontiguousarray(points, dtype=np.float32))
    return km.centroids.astype(np.float32)
