"""Search results and zero-shot classification over codes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semstore import exif_fields
from semstore.codec import PQVAECodec
from semstore.validation import readable

_CLASSIFY_CHUNK = 65_536


@dataclass(frozen=True)
class SearchHit:
    """One search result: the item id, its score, where it came from and its metadata."""

    id: int
    score: float
    source_uri: str
    metadata: dict[str, Any] = field(default_factory=dict)
    width: int | None = None
    height: int | None = None
    #: The photo facts read from its EXIF block (see :func:`semstore.exif_fields.display`): taken_at, make, model, ...
    exif: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    """A search's hits, and the shards of a sharded deployment that did not answer (empty:
    the answer is complete; see :mod:`semstore.distributed.shard_serving`)."""

    hits: list[SearchHit]
    missing_shards: list[int] = field(default_factory=list)
    shard_count: int = 1

    @property
    def partial(self) -> bool:
        """Whether some shard's items are missing from the answer."""
        return bool(self.missing_shards)


def hits_from_rows(rows: Sequence[Any], scores: Sequence[float]) -> list[SearchHit]:
    """Pair storage rows with scores (same order); stored text is made :func:`~semstore.validation.readable`."""
    return [
        SearchHit(
            id=int(row.id),
            score=float(score),
            source_uri=readable(row.source_uri),
            metadata=readable(dict(row.metadata_ or {})),
            width=row.width,
            height=row.height,
            exif=readable(exif_fields.display(facts)) if (facts := getattr(row, "exif", None)) else {},
        )
        for row, score in zip(rows, scores)
    ]


def hits_for_pairs(rows: Sequence[Any], pairs: Sequence[tuple[float, int]]) -> list[SearchHit]:
    """Hits for ``(score, id)`` pairs in their order, from the rows read for them; an id with no
    row (deleted between search and lookup) is dropped rather than returned dangling."""
    by_id = {row.id: row for row in rows}
    kept = [(s, i) for s, i in pairs if i in by_id]
    return hits_from_rows([by_id[i] for _, i in kept], [s for s, _ in kept])


@dataclass
class Classification:
    """Per-item zero-shot labels: ``labels[label_index[i]]`` is item ``ids[i]``'s label."""

    labels: list[str]
    ids: np.ndarray
    label_index: np.ndarray
    scores: np.ndarray

    def counts(self) -> dict[str, int]:
        """Items per label (every label listed, zero included)."""
        found = Counter(self.label_index.tolist())
        return {label: int(found.get(i, 0)) for i, label in enumerate(self.labels)}

    def items(self) -> list[tuple[int, str, float]]:
        """``(item id, label, cosine score)`` for every item, in id order."""
        return [
            (int(i), self.labels[int(j)], float(s)) for i, j, s in zip(self.ids, self.label_index, self.scores)
        ]

    def __len__(self) -> int:
        return int(self.ids.size)


def classify_codes(
    codec: PQVAECodec | None,
    labels: list[str],
    prompt_embeddings: np.ndarray,
    ids: np.ndarray,
    codes: np.ndarray | None,
) -> Classification:
    """Label each item by the argmax cosine between its decoded embedding and the prompts."""
    if codec is None or codes is None or ids.size == 0:
        empty = np.empty(0, dtype=np.int64)
        return Classification(labels, empty, empty, np.empty(0, dtype=np.float32))
    prompts = prompt_embeddings / np.maximum(np.linalg.norm(prompt_embeddings, axis=1, keepdims=True), 1e-12)
    best = np.empty(ids.size, dtype=np.int64)
    best_scores = np.empty(ids.size, dtype=np.float32)
    for start in range(0, ids.size, _CLASSIFY_CHUNK):
        decoded = codec.refined_decode(codes[start : start + _CLASSIFY_CHUNK])
        cosines = decoded @ prompts.T
        best[start : start + _CLASSIFY_CHUNK] = np.argmax(cosines, axis=1)
        best_scores[start : start + _CLASSIFY_CHUNK] = np.max(cosines, axis=1)
    return Classification(labels, ids.astype(np.int64), best, best_scores)
