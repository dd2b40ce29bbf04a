"""Ingest: sources -> batches -> decode -> encode -> compress -> store, resumable and fault tolerant.

Each batch commits in one transaction whose rows hold an item and its codes together, so
an interrupted run leaves only whole items behind, and a re-run skips them by content hash.
A collection without a codec buffers its first embeddings in memory (never in the
database), trains its codec on them, stores codec + first items in one transaction, then
streams the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker
from tqdm.auto import tqdm

from semstore import storage
from semstore.codec import PQVAECodec
from semstore.encoders import Encoder
from semstore.ingest.budget import PixelBudget
from semstore.ingest.exif import exif_row
from semstore.ingest.images import BadImageError, content_hash, decode_image
from semstore.ingest.sources import iter_image_files


class IngestError(RuntimeError):
    """An ingest run could not store anything (e.g. too few images to train a codec)."""


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C (or another KeyboardInterrupt) stopped an ingest; says what was kept and lost.

    Every item counted in :attr:`report` was committed and stays. :attr:`unsaved_sample`
    images had been embedded for the codec's training sample but were not stored yet:
    their embeddings lived in memory only (never on disk) and are gone. Running the same
    ingest again resumes: stored images are skipped by content hash.
    """

    def __init__(self, report: IngestReport, unsaved_sample: int) -> None:
        super().__init__(report.summary())
        self.report = report
        self.unsaved_sample = unsaved_sample


TOO_FEW_TO_TRAIN = (
    "a new collection needs at least 2 readable images to train its codec; "
    "add more images or reuse a trained codec (--codec FILE)"
)


@dataclass(frozen=True)
class BytesSource:
    """An image given as bytes (e.g. an HTTP upload) rather than a file; stored as ``uri``."""

    uri: str
    data: bytes


@dataclass(frozen=True)
class FailedSource:
    """A source that was skipped, and why."""

    source: str
    reason: str


@dataclass
class IngestReport:
    """Counts of one ingest run: added, skipped as unchanged, failed with reasons."""

    added: int = 0
    skipped: int = 0
    failed: list[FailedSource] = field(default_factory=list)
    #: ``(source, new item id)`` of every added item, in the order they were stored.
    added_items: list[tuple[str, int]] = field(default_factory=list)
    seconds: float = 0.0
    codec_trained: bool = False
    codec_hash: str | None = None
    codec_report: str | None = None

    @property
    def images_per_second(self) -> float:
        return (self.added + self.skipped) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = f"added {self.added}, skipped {self.skipped} unchanged, failed {len(self.failed)} in {self.seconds:.1f}s"
        if self.codec_trained:
            text += f"; trained codec {self.codec_hash[:12] if self.codec_hash else ''} ({self.codec_report})"
        return text


@dataclass
class _Decoded:
    source: str
    digest: str
    image: Any
    width: int
    height: int
    exif: dict[str, object] | None = None  # item_exif columns (None: the image has no EXIF)


@dataclass
class _Pending:
    """Decoded images of a batch plus the failures found while reading them."""

    decoded: list[_Decoded]
    failed: list[FailedSource]
    skipped: int


ItemsAdded = Callable[[np.ndarray, np.ndarray, list[Mapping[str, Any] | None]], None]
CodecFactory = Callable[[int], PQVAECodec]


class IngestPipeline:
    """Adds image files to one collection. Components are passed in so tests can swap them.

    ``on_items_added(ids, codes, metadata)`` is called after every committed batch (e.g. to
    update an in-memory search index and its metadata columns).
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        collection_id: int,
        encoder: Encoder,
        codec: PQVAECodec | None,
        codec_id: int | None,
        codec_factory: CodecFactory,
        batch_size: int = 32,
        bootstrap_size: int = 20_000,
        max_pixels: int = 89_478_485,
        pixel_budget: PixelBudget | None = None,
        on_items_added: ItemsAdded | None = None,
        on_codec_trained: Callable[[PQVAECodec, int], None] | None = None,
    ) -> None:
        if (codec is None) != (codec_id is None):
            raise ValueError("codec and codec_id must be given together")
        self._sessions = sessions
        self._collection_id = collection_id
        self._encoder = encoder
        self._codec = codec
        self._codec_id = codec_id
        self._codec_factory = codec_factory
        self._batch_size = max(1, batch_size)
        self._bootstrap_size = max(2, bootstrap_size)
        self._max_pixels = max_pixels
        self._pixel_budget = pixel_budget
        self._on_items_added = on_items_added
        self._on_codec_trained = on_codec_trained
        self._buffer: list[tuple[_Decoded, np.ndarray]] = []
        self._sample_bar: tqdm | None = None

    @property
    def codec(self) -> PQVAECodec | None:
        return self._codec

    def run(
        self,
        sources: Iterable[str | Path] | str | Path,
        *,
        metadata: Mapping[str, Any] | None = None,
        progress: bool = True,
    ) -> IngestReport:
        """Ingest every image under ``sources``; bad files are reported, never fatal."""
        return self._run(list(iter_image_files(sources)), metadata, progress)

    def run_bytes(
        self,
        sources: Sequence[BytesSource],
        *,
        metadata: Mapping[str, Any] | None = None,
        progress: bool = False,
    ) -> IngestReport:
        """Ingest images given as bytes, exactly like files (dedup, bad images reported)."""
        return self._run(list(sources), metadata, progress)

    def _run(
        self, files: list[Path | BytesSource], metadata: Mapping[str, Any] | None, progress: bool
    ) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport()
        bar = tqdm(total=len(files), desc="ingest", unit="img", disable=not progress, dynamic_ncols=True)
        if self._codec is None and files:
            # The first phase stores nothing until the codec is trained: give it its own bar.
            self._sample_bar = tqdm(
                total=min(self._bootstrap_size, len(files)), desc="embedding codec sample", unit="img",
                disable=not progress, dynamic_ncols=True, position=1,
            )  # fmt: skip
        try:
            self._ingest_batches(files, metadata, report, bar, progress)
        except KeyboardInterrupt as exc:
            unsaved, self._buffer = len(self._buffer), []
            report.seconds = time.perf_counter() - started
            raise IngestInterrupted(report, unsaved) from exc
        finally:
            self._close_sample_bar()
            bar.close()
        report.seconds = time.perf_counter() - started
        return report

    def _ingest_batches(
        self, files: list[Path | BytesSource], metadata: Mapping[str, Any] | None, report: IngestReport,
        bar: tqdm, progress: bool,
    ) -> None:
        seen: set[str] = set()
        batches = [files[i : i + self._batch_size] for i in range(0, len(files), self._batch_size)]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="semstore-decode") as pool:
            # Decode the next batch while the encoder works on the current one.
            upcoming: Future[_Pending] | None = pool.submit(self._read_batch, batches[0], seen) if batches else None
            for index in range(len(batches)):
                assert upcoming is not None
                pending = upcoming.result()
                upcoming = pool.submit(self._read_batch, batches[index + 1], seen) if index + 1 < len(batches) else None
                report.failed.extend(pending.failed)
                report.skipped += pending.skipped
                if pending.decoded:
                    embeddings = self._encoder.encode_images([d.image for d in pending.decoded])
                    for d in pending.decoded:
                        d.image = None  # free pixels early
                    self._accept(pending.decoded, embeddings, metadata, report, progress)
                bar.update(len(batches[index]))
                self._show_counts(bar, report)
        if self._buffer:
            self._train_and_flush(metadata, report, progress)
            self._show_counts(bar, report)  # the buffered images are stored only now

    def _close_sample_bar(self) -> None:
        if self._sample_bar is not None:
            self._sample_bar.refresh()  # its last count, whatever tqdm's redraw interval
            self._sample_bar.close()
            self._sample_bar = None

    def _show_counts(self, bar: tqdm, report: IngestReport) -> None:
        counts = {"added": report.added, "skipped": report.skipped, "failed": len(report.failed)}
        if self._buffer:
            counts["awaiting_codec"] = len(self._buffer)  # embedded, stored once the codec is trained
        bar.set_postfix(counts, refresh=True)

    # -- stages ----------------------------------------------------------------------------
    def _read_batch(self, paths: Sequence[Path | BytesSource], seen: set[str]) -> _Pending:
        decoded: list[_Decoded] = []
        failed: list[FailedSource] = []
        digests: dict[str, tuple[str, bytes]] = {}
        skipped = 0
        for path in paths:
            name, data = read_source(path)
            if isinstance(data, FailedSource):
                failed.append(data)
                continue
            digest = content_hash(data)
            if digest in seen or digest in digests:
                skipped += 1
                continue
            digests[digest] = (name, data)
        with self._sessions() as session:
            stored = storage.existing_hashes(session, collection_id=self._collection_id, hashes=list(digests))
        for digest, (name, data) in digests.items():
            seen.add(digest)
            if digest in stored:
                skipped += 1
                continue
            try:
                image = decode_image(
                    data, max_pixels=self._max_pixels, min_edge=self._encoder.image_edge, budget=self._pixel_budget
                )
            except BadImageError as exc:
                failed.append(FailedSource(name, exc.reason))
                continue
            decoded.append(_Decoded(name, digest, image.image, image.width, image.height, exif_row(image.exif)))
        return _Pending(decoded, failed, skipped)

    def _accept(
        self,
        decoded: list[_Decoded],
        embeddings: np.ndarray,
        metadata: Mapping[str, Any] | None,
        report: IngestReport,
        progress: bool,
    ) -> None:
        if self._codec is None:
            self._buffer.extend(zip(decoded, embeddings))
            if self._sample_bar is not None:
                self._sample_bar.update(len(decoded))
            if len(self._buffer) >= self._bootstrap_size:
                self._train_and_flush(metadata, report, progress)
            return
        self._store(decoded, self._codec.encode(embeddings), metadata, report)

    def _train_and_flush(self, metadata: Mapping[str, Any] | None, report: IngestReport, progress: bool) -> None:
        decoded = [d for d, _ in self._buffer]
        embeddings = np.stack([e for _, e in self._buffer])
        self._close_sample_bar()
        if self._codec is None:
            codec, codec_id, trained = bootstrap_codec(
                self._sessions, self._collection_id, self._codec_factory, embeddings, progress=progress
            )
            if trained:
                report.codec_trained = True
                report.codec_report = codec.report.summary() if codec.report else None
            self._codec, self._codec_id = codec, codec_id
            report.codec_hash = codec.content_hash
            if self._on_codec_trained is not None:
                self._on_codec_trained(codec, codec_id)
        assert self._codec is not None
        self._store(decoded, self._codec.encode(embeddings), metadata, report)
        self._buffer = []  # (kept until stored, so an interruption while training counts them as lost)

    def _store(
        self,
        decoded: list[_Decoded],
        codes: np.ndarray,
        metadata: Mapping[str, Any] | None,
        report: IngestReport,
    ) -> None:
        assert self._codec_id is not None
        items = new_items(
            [(d.source, d.digest, d.width, d.height) for d in decoded], codes, codec_id=self._codec_id, metadata=metadata,
            exif=[d.exif for d in decoded],
        )
        kept, ids = store_items(self._sessions, self._collection_id, items)
        report.skipped += len(items) - len(kept)
        report.added += len(ids)
        report.added_items.extend((items[k].source_uri, int(i)) for k, i in zip(kept, ids))
        if self._on_items_added is not None and ids:
            self._on_items_added(np.asarray(ids, dtype=np.int64), codes[kept], [items[k].metadata for k in kept])


# -- stages shared with the distributed pipeline (semstore.distributed) ----------------------
def read_source(source: Path | BytesSource) -> tuple[str, bytes | FailedSource]:
    """The name of a source and its bytes, or the :class:`FailedSource` saying why it is unreadable."""
    if isinstance(source, BytesSource):
        return source.uri, source.data
    name = str(source)
    try:
        return name, source.read_bytes()
    except OSError as exc:
        return name, FailedSource(name, f"cannot read file: {exc.strerror or exc}")


def bootstrap_codec(
    sessions: sessionmaker[Session], collection_id: int, codec_factory: CodecFactory, embeddings: np.ndarray,
    *, progress: bool,
) -> tuple[PQVAECodec, int, bool]:  # fmt: skip
    """Train a new collection's codec on its sample's ``embeddings`` and attach it (both the
    local and the Ray ingest); ``(codec in use, its id, whether it is the one trained here)``."""
    if len(embeddings) < 2:
        raise IngestError(TOO_FEW_TO_TRAIN)
    trained = codec_factory(embeddings.shape[1]).fit(embeddings, seed=0, progress=progress)
    codec, codec_id = attach_codec(sessions, collection_id, trained)
    return codec, codec_id, codec is trained


def attach_codec(sessions: sessionmaker[Session], collection_id: int, trained: PQVAECodec) -> tuple[PQVAECodec, int]:
    """Store ``trained`` as the collection's codec; returns ``(codec, codec id)`` actually in use.

    If another process attached a codec first, that one wins (so codes stay comparable)
    and is returned instead of ``trained``.
    """
    with storage.transaction(sessions) as session:
        collection = storage.get_collection_by_id(session, collection_id=collection_id)
        if collection.codec_id is not None:
            row = storage.get_codec(session, codec_id=collection.codec_id)
            return PQVAECodec.from_bytes(row.weights), row.id
        row = storage.save_codec(
            session, content_hash=trained.content_hash, config=trained.config.to_dict(), weights=trained.to_bytes()
        )
        storage.set_collection_codec(session, collection_id=collection_id, codec_id=row.id)
        return trained, row.id


def new_items(
    images: Sequence[tuple[str, str, int, int]],
    codes: np.ndarray,
    *,
    codec_id: int,
    metadata: Mapping[str, Any] | None,
    exif: Sequence[Mapping[str, Any] | None] | None = None,
) -> list[storage.NewItem]:
    """Rows to insert for ``(source, content hash, width, height)`` images and their codes
    (and each image's ``item_exif`` columns, if read)."""
    facts = list(exif) if exif is not None else [None] * len(images)
    return [
        storage.NewItem(
            source_uri=source,
            content_hash=digest,
            codes=row,
            codec_id=codec_id,
            width=width,
            height=height,
            metadata=dict(metadata) if metadata else None,
            exif=found,
        )
        for (source, digest, width, height), row, found in zip(images, storage.pack_codes(codes), facts)
    ]


def store_items(
    sessions: sessionmaker[Session], collection_id: int, items: list[storage.NewItem]
) -> tuple[list[int], list[int]]:
    """Insert ``items`` in one transaction; returns ``(positions stored, their new ids)``.

    Items whose content hash a concurrent writer (or an earlier attempt of a retried task)
    stored meanwhile are left out, so storing is idempotent.
    """
    positions = list(range(len(items)))
    try:
        with storage.transaction(sessions) as session:
            return positions, storage.add_items(session, collection_id=collection_id, items=items)
    except storage.DuplicateItemError:
        with sessions() as session:
            stored = storage.existing_hashes(session, collection_id=collection_id, hashes=[i.content_hash for i in items])
        positions = [k for k, item in enumerate(items) if item.content_hash not in stored]
        with storage.transaction(sessions) as session:
            ids = storage.add_items(session, collection_id=collection_id, items=[items[k] for k in positions])
        return positions, ids
