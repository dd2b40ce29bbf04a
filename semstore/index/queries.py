"""The codec's query transform folded into one matrix, computed once per index."""

from __future__ import annotations

from typing import Any

import numpy as np

from semstore.codec import PQVAECodec


class QueryMap:
    """``codec.query_transform`` and ``codec.query_offset`` as a (D, M*d) matrix and a (D,) vector.

    Both are linear in the query, so their values on the identity give them exactly (up to
    float rounding). One matrix product per search replaces the codec's per-call einsum over
    its (M, D, d) blocks, which copies the blocks on every call (most of a 1-query search).
    """

    def __init__(self, codec: PQVAECodec) -> None:
        eye = np.eye(codec.dim, dtype=np.float32)
        self._codec = codec
        self.matrix = np.ascontiguousarray(codec.query_transform(eye), dtype=np.float32)
        self.mean = np.ascontiguousarray(codec.query_offset(eye), dtype=np.float32)

    def __call__(self, queries: Any) -> tuple[np.ndarray, np.ndarray]:
        """(sub-queries (n, M*d) float32, offsets (n,) float32); ValueError like the codec's."""
        self._codec.query_offset(queries)  # validates shape, dtype and finiteness
        data = np.asarray(queries, dtype=np.float32).reshape(-1, self.matrix.shape[0])
        return np.ascontiguousarray(data @ self.matrix), data @ self.mean
