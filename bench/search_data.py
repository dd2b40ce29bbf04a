"""SYNTHETIC CLIP-like 512-d data, small PQ-VAE codecs and their codes for the search benches.

Everything is cached under ``bench/.cache/search/`` (gitignored): the database is generated
and encoded in chunks of 100,000 items, so the N-item database is the first N items of the
largest one and a larger run reuses the chunks of a smaller one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
import numpy as np

from bench.datasets import SyntheticSpace
from bench.report import CACHE
from semstore.codec import PQVAECodec

DIM = 512
CHUNK = 100_000
SEED = 0
FOLDER = CACHE / "search"

# 16 bytes per item both ways: 16 x 8-bit codes (IndexPQ layout) or 32 x 4-bit (fast-scan).
CODECS = {"pq16x8": (16, 256), "pq32x4": (32, 16)}


def _space() -> SyntheticSpace:
    return SyntheticSpace(DIM, 64, 20, np.random.default_rng(SEED))


def train_vectors(n: int = 20_000) -> np.ndarray:
    """Training vectors (document view), disjoint from the database chunks."""
    return _space().views(n, np.random.default_rng([SEED, 1]))[0]


def queries(n: int) -> np.ndarray:
    """Query-view vectors (text-like, with the modality gap), unit norm."""
    return _space().views(n, np.random.default_rng([SEED, 2]))[1]


def _save(path: Path, array: np.ndarray) -> None:
    """Write then rename: an interrupted run never leaves a truncated cache file."""
    partial = path.with_name(path.name + ".partial.npy")
    np.save(partial, array)
    os.replace(partial, path)


def _chunk_vectors(i: int) -> np.ndarray:
    path = FOLDER / f"db-{i}.npy"
    if not path.exists():
        FOLDER.mkdir(parents=True, exist_ok=True)
        _save(path, _space().views(CHUNK, np.random.default_rng([SEED, 100 + i]))[0])
    return np.load(path, mmap_mode="r")


def database(n: int) -> np.ndarray:
    """The first ``n`` database vectors (n, 512) float32."""
    chunks = [_chunk_vectors(i) for i in range((n + CHUNK - 1) // CHUNK)]
    return np.ascontiguousarray(np.concatenate(chunks)[:n], dtype=np.float32)


def codec(name: str, train_size: int = 2_000) -> PQVAECodec:
    """A small codec trained quickly (k-means init, no refinement iterations, greedy encoding)."""
    path = FOLDER / f"codec-{name}-{train_size}.safetensors"
    if path.exists():
        return PQVAECodec.load(path)
    m, k = CODECS[name]
    fitted = PQVAECodec(
        dim=DIM, num_subvectors=m, codebook_size=k, iterations=0, kmeans_iterations=4, beam_size=1, init="kmeans"
    ).fit(train_vectors(train_size), progress=False)
    FOLDER.mkdir(parents=True, exist_ok=True)
    fitted.save(path)
    return fitted


def codes(model: PQVAECodec, n: int) -> tuple[np.ndarray, float]:
    """Codes of the first ``n`` database vectors, and the seconds spent encoding now (0 if cached)."""
    spent = 0.0
    parts = []
    for i in range((n + CHUNK - 1) // CHUNK):
        path = FOLDER / f"codes-{model.content_hash[:16]}-{i}.npy"
        if not path.exists():
            t0 = time.perf_counter()
            _save(path, model.encode(_chunk_vectors(i)))
            spent += time.perf_counter() - t0
        parts.append(np.load(path))
    return np.concatenate(parts)[:n], spent
