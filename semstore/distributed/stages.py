"""The stages of the Ray ingest pipeline, as plain functions and one callable class.

Nothing here imports Ray: Ray Data calls these on its workers (``map_batches``), and
they reuse the single-process pipeline's pieces (:func:`read_source`, :func:`content_hash`,
:func:`open_image`, :func:`new_items`, :func:`store_items`) so both paths store identical rows.
Batches are dicts of numpy arrays (Ray Data's ``numpy`` batch format).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from semstore import storage
from semstore.codec import PQVAECodec
from semstore.encoders import Encoder, build_encoder
from semstore.ingest.exif import exif_row
from semstore.ingest.images import BadImageError, content_hash, decode_image
from semstore.ingest.pipeline import FailedSource, new_items, read_source, store_items

Batch = dict[str, np.ndarray]

#: Row states carried through the stages.
NEW, SKIPPED, FAILED = "new", "skipped", "failed"

_EMPTY_PIXELS = np.zeros((0, 0, 3), dtype=np.uint8)
_sessions: dict[str, sessionmaker[Session]] = {}
_sessions_lock = threading.Lock()


def worker_sessions(database_url: str) -> sessionmaker[Session]:
    """One pooled engine per database per worker process (at most 2 connections), reused across batches."""
    with _sessions_lock:
        if database_url not in _sessions:
            engine = storage.create_db_engine(database_url, pool_size=2, max_overflow=0)
            _sessions[database_url] = storage.session_factory(engine)
        return _sessions[database_url]


def read_batch(
    batch: Batch, *, database_url: str, collection_id: int, max_pixels: int, min_edge: int | None = None
) -> Batch:
    """Read, hash and decode the files of ``batch["source"]``; mark stored and repeated hashes skipped.

    Images are decoded no smaller than ``min_edge`` a side (the model's input size), as
    the local pipeline does, so both paths embed the same pixels.

    Output columns: ``source, digest, status, reason, pixels`` (RGB uint8 arrays),
    ``width, height``. Unreadable or undecodable files become ``failed`` rows with the reason.
    """
    sources = [str(s) for s in batch["source"]]
    rows: list[dict[str, Any]] = []
    for name in sources:
        _name, data = read_source(Path(name))
        if isinstance(data, FailedSource):
            rows.append(_row(name, "", FAILED, data.reason))
        else:
            rows.append(_row(name, content_hash(data), NEW, "", data=data))
    with worker_sessions(database_url)() as session:
        stored = storage.existing_hashes(
            session, collection_id=collection_id, hashes=[r["digest"] for r in rows if r["status"] == NEW]
        )
    seen: set[str] = set()
    for row in rows:
        if row["status"] != NEW:
            continue
        data = row.pop("data")
        if row["digest"] in stored or row["digest"] in seen:
            row["status"] = SKIPPED
            continue
        seen.add(row["digest"])
        try:
            decoded = decode_image(data, max_pixels=max_pixels, min_edge=min_edge)
        except BadImageError as exc:
            row["status"], row["reason"] = FAILED, exc.reason
            continue
        row["pixels"], row["width"], row["height"] = np.asarray(decoded.image, dtype=np.uint8), decoded.width, decoded.height
        found = exif_row(decoded.exif)
        row["exif"] = json.dumps(found) if found else ""  # (a plain column: JSON text, "" without EXIF)
    return _columns(rows)


def _row(source: str, digest: str, status: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"source": source, "digest": digest, "status": status, "reason": reason,
            "pixels": _EMPTY_PIXELS, "width": 0, "height": 0, "exif": "", **extra}


def _columns(rows: list[dict[str, Any]]) -> Batch:
    pixels = np.empty(len(rows), dtype=object)
    pixels[:] = [r.pop("pixels") for r in rows]
    return {
        "source": np.array([r["source"] for r in rows], dtype=object),
        "digest": np.array([r["digest"] for r in rows], dtype=object),
        "status": np.array([r["status"] for r in rows], dtype=object),
        "reason": np.array([r["reason"] for r in rows], dtype=object),
        "pixels": pixels,
        "width": np.array([r["width"] for r in rows], dtype=np.int64),
        "height": np.array([r["height"] for r in rows], dtype=np.int64),
        "exif": np.array([r["exif"] for r in rows], dtype=object),
    }


@dataclass(frozen=True)
class EncoderSpec:
    """How each actor builds its own encoder (one model per actor): the driver's Database's
    injected ``factory(model, pretrained)`` if it has one (shipped to the actors), else
    :func:`semstore.encoders.build_encoder`."""

    model: str
    pretrained: str | None
    device: str = "cpu"
    threads: int | None = None
    batch_size: int = 32
    factory: Callable[[str, str | None], Encoder] | None = None

    def build(self) -> Encoder:
        if self.factory is not None:
            return self.factory(self.model, self.pretrained)
        return build_encoder(self.model, self.pretrained, device=self.device, threads=self.threads, batch_size=self.batch_size)


@dataclass(frozen=True)
class FailOnce:
    """Fault injection for resilience tests: the first actor to finish ``after_batches`` batches
    dies (``os._exit``) once; ``marker`` (a file all actors can see) records that it happened."""

    after_batches: int
    marker: str


class EncodeActor:
    """Ray Data actor: embeds the ``new`` rows with its own encoder, then compresses them.

    With a codec it outputs ``codes`` (n, M); without one (codec bootstrap) it outputs the
    float ``embedding`` (n, dim) so the driver can train the codec. ``pixels`` is dropped.
    """

    def __init__(self, *, encoder: EncoderSpec, codec: bytes | None, fail_once: FailOnce | None = None) -> None:
        self._encoder = encoder.build()
        self._codec = PQVAECodec.from_bytes(codec) if codec is not None else None
        self._fail_once = fail_once
        self._batches = 0

    def __call__(self, batch: Batch) -> Batch:
        new = np.flatnonzero(batch["status"] == NEW)
        pixels = batch.pop("pixels")
        if new.size:
            from PIL import Image

            embeddings = self._encoder.encode_images([Image.fromarray(pixels[i]) for i in new])
        else:
            embeddings = np.zeros((0, self._encoder.dim), dtype=np.float32)
        if self._codec is None:
            out = np.zeros((len(pixels), self._encoder.dim), dtype=np.float32)
            out[new] = embeddings
            batch["embedding"] = out
        else:
            codes = np.zeros((len(pixels), self._codec.num_subvectors), dtype=self._codec.code_dtype)
            if new.size:
                codes[new] = self._codec.encode(embeddings)
            batch["codes"] = codes
        self._batches += 1
        self._maybe_fail()
        return batch

    def _maybe_fail(self) -> None:
        plan = self._fail_once
        if plan is None or self._batches < plan.after_batches:
            return
        try:
            # O_EXCL: exactly one actor, once, even when several reach the threshold together.
            os.close(os.open(plan.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os._exit(1)


def write_batch(
    batch: Batch, *, database_url: str, collection_id: int, codec_id: int, metadata: dict[str, Any] | None
) -> Batch:
    """Store the ``new`` rows of ``batch`` in one transaction (idempotent: stored hashes are skipped).

    Output columns: ``source, status, reason, item_id`` (0 unless added).
    """
    status = np.array(batch["status"], dtype=object)
    item_ids = np.zeros(len(status), dtype=np.int64)
    first: dict[str, int] = {}
    for row in np.flatnonzero(status == NEW):
        digest = str(batch["digest"][row])
        if digest in first:  # the same content twice in one write batch
            status[row] = SKIPPED
        else:
            first[digest] = int(row)
    rows = list(first.values())
    if rows:
        images = [
            (str(batch["source"][r]), str(batch["digest"][r]), int(batch["width"][r]), int(batch["height"][r]))
            for r in rows
        ]
        exif = [json.loads(batch["exif"][r]) if "exif" in batch and batch["exif"][r] else None for r in rows]
        items = new_items(images, np.asarray(batch["codes"])[rows], codec_id=codec_id, metadata=metadata, exif=exif)
        kept, ids = store_items(worker_sessions(database_url), collection_id, items)
        stored = {rows[k]: i for k, i in zip(kept, ids)}
        for row in rows:
            if row in stored:
                status[row], item_ids[row] = "added", stored[row]
            else:
                status[row] = SKIPPED
    return {"source": batch["source"], "status": status, "reason": batch["reason"], "item_id": item_ids}
