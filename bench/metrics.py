"""Quality and size metrics of the codec-quality benchmark (numpy; constriction for coding)."""

from __future__ import annotations

import numpy as np


class MetricError(ValueError):
    """Raised for inputs a metric cannot be computed on (bad shapes, k too large, ...)."""


def _ids_matrix(name: str, ids: np.ndarray, k: int) -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim != 2:
        raise MetricError(f"{name} must be 2-D (n_queries, k), got shape {array.shape}")
    if array.shape[1] < k:
        raise MetricError(f"{name} has {array.shape[1]} columns, fewer than k={k}")
    return array[:, :k]


def exact_topk_inner_product(queries: np.ndarray, database: np.ndarray, k: int,
                             chunk: int = 2048) -> np.ndarray:
    """Ids (n_queries, k) of the k largest inner products, best first (exact, float)."""
    if k > database.shape[0]:
        raise MetricError(f"k={k} exceeds the database size {database.shape[0]}")
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start:start + chunk] @ database.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start:start + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """k-recall@k: mean over queries of |found[:k] ∩ truth[:k]| / k (e.g. 10-recall@10)."""
    f = _ids_matrix("found", found, k)
    t = _ids_matrix("truth", truth, k)
    if f.shape[0] != t.shape[0]:
        raise MetricError(f"found has {f.shape[0]} rows but truth has {t.shape[0]}")
    if f.shape[0] == 0:
        raise MetricError("no queries")
    hits = sum(len(np.intersect1d(a, b)) for a, b in zip(f, t))
    return hits / (k * f.shape[0])


def paired_recall(found: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Fraction of queries whose single correct item ``targets[i]`` is in ``found[i, :k]``."""
    f = _ids_matrix("found", found, k)
    t = np.asarray(targets).reshape(-1)
    if f.shape[0] != t.shape[0] or t.shape[0] == 0:
        raise MetricError(f"found has {f.shape[0]} rows but there are {t.shape[0]} targets")
    return float(np.mean(np.any(f == t[:, None], axis=1)))


def zero_shot_accuracy(vectors: np.ndarray, prompts: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of label = argmax cosine(vector, prompt) (rows are L2-normalised here)."""
    x = np.asarray(vectors, dtype=np.float64)
    p = np.asarray(prompts, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or p.ndim != 2 or x.shape[1] != p.shape[1] or x.shape[0] != y.shape[0]:
        raise MetricError(f"incompatible shapes: vectors {x.shape}, prompts {p.shape}, labels {y.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.argmax(x @ p.T, axis=1) == y))


def _symbols(name: str, symbols: np.ndarray) -> np.ndarray:
    array = np.asarray(symbols)
    if array.ndim != 2 or array.shape[0] == 0:
        raise MetricError(f"{name} must be a non-empty 2-D (n, positions) array, got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer) or array.min() < 0:
        raise MetricError(f"{name} must hold non-negative integers")
    return array.astype(np.int64)


def empirical_entropy_bits(symbols: np.ndarray) -> float:
    """Sum over positions of the plug-in Shannon entropy of each column: bits per row.

    A lower bound (for this sample) on what a per-position static entropy coder can reach.
    """
    s = _symbols("symbols", symbols)
    total = 0.0
    for column in s.T:
        counts = np.bincount(column)
        p = counts[counts > 0] / column.size
        total -= float(np.sum(p * np.log2(p)))
    return total


def position_models(train_symbols: np.ndarray, alphabet_size: int,
                    smoothing: float = 0.5) -> np.ndarray:
    """Per-position categorical probabilities (positions, alphabet_size) from train counts.

    Additive ``smoothing`` keeps every symbol codable.
    """
    s = _symbols("train_symbols", train_symbols)
    if s.max() >= alphabet_size:
        raise MetricError(f"symbol {s.max()} outside the alphabet of size {alphabet_size}")
    if smoothing <= 0:
        raise MetricError("smoothing must be positive")
    counts = np.stack([np.bincount(c, minlength=alphabet_size) for c in s.T]).astype(np.float64)
    counts += smoothing
    return counts / counts.sum(axis=1, keepdims=True)


def cross_entropy_bits(probabilities: np.ndarray, symbols: np.ndarray) -> float:
    """Ideal code length, bits per row, of ``symbols`` under per-position ``probabilities``."""
    s = _symbols("symbols", symbols)
    if s.shape[1] != probabilities.shape[0] or s.max() >= probabilities.shape[1]:
        raise MetricError("symbols do not match the models' positions / alphabet")
    logp = np.log2(probabilities[np.arange(s.shape[1])[None, :], s])
    return float(-logp.sum() / s.shape[0])


def ans_encode(probabilities: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """Entropy-code ``symbols`` (n, positions) with one categorical model per position.

    Uses constriction's ANS (stack) coder; returns the compressed uint32 words. Decoding
    with :func:`ans_decode` and the same models gives the symbols back.
    """
    import constriction

    s = _symbols("symbols", symbols)
    if s.shape[1] != probabilities.shape[0] or s.max() >= probabilities.shape[1]:
        raise MetricError("symbols do not match the models' positions / alphabet")
    coder = constriction.stream.stack.AnsCoder()
    model = constriction.stream.model.Categorical
    # A stack: encode the last position first so that decoding yields position 0 first.
    for m in range(s.shape[1] - 1, -1, -1):
        coder.encode_reverse(s[:, m].astype(np.int32),
                             model(probabilities[m].astype(np.float64), perfect=False))
    return np.asarray(coder.get_compressed(), dtype=np.uint32)


def ans_decode(probabilities: np.ndarray, compressed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`ans_encode`: symbols (n, positions), int64."""
    import constriction

    coder = constriction.stream.stack.AnsCoder(np.asarray(compressed, dtype=np.uint32))
    model = constriction.stream.model.Categorical
    columns = [
        np.asarray(coder.decode(model(probabilities[m].astype(np.float64), perfect=False), n))
        for m in range(probabilities.shape[0])
    ]
    return np.stack(columns, axis=1).astype(np.int64)


def coded_size_bits(train_symbols: np.ndarray, test_symbols: np.ndarray, alphabet_size: int,
                    smoothing: float = 0.5) -> float:
    """Actual entropy-coded size of ``test_symbols``, bits per row (whole 32-bit words).

    Models: one categorical per position fitted on ``train_symbols``; coder: ANS.
    """
    probabilities = position_models(train_symbols, alphabet_size, smoothing)
    compressed = ans_encode(probabilities, test_symbols)
    return 32.0 * compressed.size / np.asarray(test_symbols).shape[0]
