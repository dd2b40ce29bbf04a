"""A collection of compressed images: ingest, search, zero-shot classification, stats.

:class:`Collection` is the object users get from :meth:`semstore.Database.collection`;
the CLI and the HTTP server call exactly these methods.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.exc import DBAPIError

from semstore import storage
from semstore.codec import PQVAECodec
from semstore.files import is_inside, read_regular_file
from semstore.filter_cache import FilterCache, filter_key
from semstore.filtered_search import ColumnsFilter, DatabaseFilter, FilterSource, filtered_search
from semstore.ingest.images import content_hash, open_image
from semstore.ingest.pipeline import BytesSource, IngestPipeline, IngestReport
from semstore.names import UnsafePathError
from semstore.search import Classification, SearchHit, SearchResult, classify_codes, hits_for_pairs, hits_from_rows
from semstore.uploads import UPLOAD_SCHEME, UploadStore, discard, upload_uri
from semstore.conditions import check_filter
from semstore.validation import check_metadata

if TYPE_CHECKING:
    from semstore.exif_backfill import BackfillReport
    from semstore.database import Database
    from semstore.index_service import IndexService, SearchIndex
    from semstore.distributed import RayIngestOptions
    from semstore.encoders import Encoder

#: Candidates re-scored exactly (decoded, cosine) by default after the ADC pass.
DEFAULT_RERANK = 100


class QueryError(ValueError):
    """A search request is malformed (no query, two queries, unknown item, ...)."""


class SourceUnavailableError(LookupError):
    """An item's original image cannot be read.

    The message is the same whatever the cause (so it never tells which files exist);
    ``reason`` says what went wrong, for logs.
    """

    def __init__(self, item_id: int, reason: str) -> None:
        super().__init__(f"the original image of item {item_id} is unavailable")
        self.item_id = item_id
        self.reason = reason


__all__ = ["Collection", "CollectionStats", "QueryError", "SourceUnavailableError", "UPLOAD_SCHEME", "upload_uri"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectionStats:
    """Size and compression figures of a collection."""

    name: str
    items: int
    code_bytes: int
    bytes_per_item: float
    bits_per_vector: float | None
    bits_per_pixel: float | None
    model: str
    pretrained: str | None
    dim: int
    codec_hash: str | None
    codec_config: dict[str, Any] | None
    #: Whether search re-ranks with the codec's neural decoder (else with the linear one).
    neural_decoder: bool = False
    #: The in-memory index, when one is loaded: its kind and RAM per item (codes + ids).
    index_kind: str | None = None
    index_bytes_per_item: float | None = None
    index_nlist: int | None = None
    index_nprobe: int | None = None
    #: The metadata keys held in memory beside the index (filters on them need no SQL), and their RAM per item.
    metadata_keys_in_memory: tuple[str, ...] = ()
    metadata_bytes_per_item: float | None = None


class Collection:
    """Images stored as codes, with a FAISS ADC index kept in step with the database.

    >>> import semstore, tempfile, pathlib  # doctest: +SKIP
    >>> db = semstore.connect("sqlite:///photos.db")  # doctest: +SKIP
    >>> photos = db.create_collection("photos")  # doctest: +SKIP
    >>> photos.add(["~/Pictures"]).summary()  # doctest: +SKIP
    >>> [hit.source_uri for hit in photos.search("a dog on a beach", k=3)]  # doctest: +SKIP
    """

    def __init__(self, db: Database, record: storage.Collection) -> None:
        self._db = db
        self.id: int = record.id
        self.name: str = record.name
        self.model: str = record.model
        self.pretrained: str | None = record.pretrained
        self.dim: int = record.dim
        self._codec: PQVAECodec | None = None
        self._codec_id: int | None = record.codec_id
        self._codec_lock = threading.Lock()
        # Serialises this process's writers of the collection; searches never take it.
        self._write_lock = threading.RLock()
        self.filters = FilterCache()  # matching ids read from the database, per revision
        self.column_filters = FilterCache()  # matching ids found in the index service's metadata columns

    # -- components ----------------------------------------------------------------------
    @property
    def database(self) -> Database:
        """The database this collection belongs to."""
        return self._db

    @property
    def encoder(self) -> Encoder:
        return self._db.encoder(self.model, self.pretrained)

    @property
    def codec(self) -> PQVAECodec | None:
        """The collection's codec, or None until its first ingest trains one."""
        current = self.codec_and_id()
        return current[0] if current is not None else None

    def codec_and_id(self, expected_id: int | None = None) -> tuple[PQVAECodec, int] | None:
        """The codec and its database id (read once, then cached), or None without one.

        ``expected_id`` (the codec id just read from the database) re-reads a cached codec
        that another process replaced.
        """
        with self._codec_lock:
            if self._codec is not None and expected_id is not None and expected_id != self._codec_id:
                self._codec = None
            if self._codec is None:
                with self._db.sessions() as session:
                    record = storage.get_collection_by_id(session, collection_id=self.id)
                    if record.codec_id is None:
                        return None
                    row = storage.get_codec(session, codec_id=record.codec_id)
                    self._codec, self._codec_id = PQVAECodec.from_bytes(row.weights), row.id
            assert self._codec_id is not None
            return self._codec, self._codec_id

    @property
    def index_service(self) -> IndexService:
        """The service owning this collection's in-memory index (see :mod:`semstore.index_service`)."""
        return self._db.index_service(self)

    @property
    def index(self) -> SearchIndex | None:
        """The search index, caught up with every committed write (None before a codec exists).

        Checking freshness costs one read of the collection's revision; an ingest running
        in another thread is never waited for.
        """
        return self.index_service.fresh()

    @property
    def loaded_index(self) -> SearchIndex | None:
        """The index if it is already in memory (never builds or loads one)."""
        return self.index_service.loaded

    # -- writing -------------------------------------------------------------------------
    def add(
        self,
        sources: Iterable[str | Path] | str | Path,
        *,
        metadata: Mapping[str, Any] | None = None,
        progress: bool = True,
        ray: RayIngestOptions | None = None,
    ) -> IngestReport:
        """Ingest image files and folders (recursive); unchanged files are skipped.

        With ``ray`` (see :class:`semstore.distributed.RayIngestOptions`) the work runs on a
        Ray cluster instead of this process. Returns an :class:`IngestReport` with counts
        added / skipped and failures with reasons. Raises ``InvalidMetadataError`` (a
        ``ValueError``) for metadata that cannot be stored, before reading any file.
        """
        metadata = check_metadata(metadata) if metadata is not None else None
        service = self.index_service
        with self._write_lock:
            if ray is not None:
                from semstore.distributed import ray_ingest

                try:
                    return ray_ingest(self, sources, options=ray, metadata=metadata, progress=progress)
                finally:
                    self._forget_codec()  # the run may have attached a codec; its rows are foreign writes
                    self.sync_index()
            pipeline = self._pipeline()
            with service.writing():
                try:
                    return pipeline.run(sources, metadata=metadata, progress=progress)
                finally:
                    self.sync_index()

    def add_images(
        self,
        images: Sequence[tuple[str, bytes]],
        *,
        metadata: Mapping[str, Any] | None = None,
        keep_originals: bool = True,
    ) -> IngestReport:
        """Ingest images given as ``(file name, bytes)`` pairs (e.g. HTTP uploads).

        They go through the same pipeline as files; each is stored with the source URI
        ``upload://<content hash>/<file name>`` (see :func:`semstore.uploads.upload_uri`: the
        file name is cleaned of folders, control and bidi characters). With ``keep_originals``
        the bytes of every stored image are kept in the collection's upload folder
        (``settings.upload_directory(name)``) so that :meth:`source_bytes` can read them.
        """
        metadata = check_metadata(metadata) if metadata is not None else None
        sources = [BytesSource(upload_uri(name, data), bytes(data)) for name, data in images]
        uploads = self.uploads
        with self._write_lock, uploads.writing(), self.index_service.writing():
            created = uploads.keep((source.uri, source.data) for source in sources) if keep_originals else []
            pipeline = self._pipeline()
            try:
                report = pipeline.run_bytes(sources, metadata=metadata, progress=False)
            except BaseException:
                discard(created)
                raise
            finally:
                self.sync_index()
            discard(self._unreferenced_uploads(created, report))
            return report

    def _unreferenced_uploads(self, created: list[Path], report: IngestReport) -> list[Path]:
        """The kept originals this ingest wrote that no item refers to: those of failed images,
        and of duplicates skipped because an item stored under another URI (e.g. an upload
        named by the longer hash used before schema 0002) already holds the same content."""
        uploads = self.uploads
        referenced = {uploads.path_for(uri) for uri, _ in report.added_items}
        unsure = [path for path in created if path not in referenced]
        if unsure:
            referenced |= {uploads.path_for(uri) for uri in self._uris_by_hash({p.stem for p in unsure})}
        return [path for path in created if path not in referenced]

    def _uris_by_hash(self, hashes: set[str]) -> set[str]:
        with self._db.sessions() as session:
            return storage.source_uris_by_hash(session, collection_id=self.id, hashes=hashes)

    def clean_uploads(self) -> int | None:
        """Delete kept originals that no item refers to, and temp files of interrupted writes.

        Such files remain only after a crash between writing an original and committing its
        item. Returns how many files were removed, or None when a writer (of any process)
        was busy with the folder, in which case nothing was touched.
        """
        return self.uploads.clean(self._uris_by_hash)

    @property
    def uploads(self) -> UploadStore:
        """The folder of this collection's kept upload originals."""
        try:
            return UploadStore(self._db.settings.upload_directory(self.name))
        except UnsafePathError:
            return UploadStore(None)

    def delete(self, ids: Sequence[int]) -> int:
        """Delete items by id (and the kept originals of uploaded ones); returns how many existed."""
        wanted = [int(i) for i in ids]
        service = self.index_service
        with self._write_lock, service.writing():
            with storage.transaction(self._db.sessions) as session:
                uris = [row.source_uri for row in storage.get_items(session, collection_id=self.id, ids=wanted)]
                removed = storage.delete_items(session, collection_id=self.id, ids=wanted)
            service.apply_removed(np.asarray(wanted, dtype=np.int64))
            uploads = self.uploads
            discard([path for path in map(uploads.path_for, uris) if path is not None])
        return removed

    def update_metadata(self, item_id: int, metadata: Mapping[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Merge (or with ``replace=True`` replace) an item's metadata; returns the new metadata.

        Raises ``InvalidMetadataError`` (nothing is written) when the metadata, or the merged
        result, cannot be stored.
        """
        metadata = check_metadata(metadata)
        service = self.index_service
        with service.writing():
            with storage.transaction(self._db.sessions) as session:
                item = storage.update_item_metadata(
                    session, collection_id=self.id, item_id=item_id, metadata=dict(metadata), replace=replace
                )
                stored = dict(item.metadata_ or {})
                metadata_revision = storage.metadata_revision(session, collection_id=self.id)
            service.apply_metadata(item_id, stored, metadata_revision)
            return stored

    # -- reading -------------------------------------------------------------------------
    def get(self, item_id: int) -> SearchHit:
        """One item (score NaN) with its source URI and metadata."""
        with self._db.sessions() as session:
            item = storage.get_item(session, collection_id=self.id, item_id=item_id)
            facts = storage.item_exif(session, collection_id=self.id, ids=[item_id]).get(item_id)
            row = storage.HitRow(item.id, item.source_uri, item.metadata_, item.width, item.height, facts)
            return hits_from_rows([row], [float("nan")])[0]

    def source_bytes(
        self, item_id: int, *, max_bytes: int | None = None, allowed_roots: Sequence[str | os.PathLike[str]] | None = None
    ) -> bytes:
        """The original image bytes of an item, checked against the content hash stored at ingest.

        Only the item's own source is read: the kept original of an upload, or its file
        path, which with ``allowed_roots`` must resolve inside one of those folders. Only
        regular files are read, and at most ``max_bytes`` bytes. Raises
        :class:`SourceUnavailableError`, with one message whatever the cause (no local
        source, outside the roots, missing, not a regular file, too large, changed since
        ingest), so a caller learns nothing about other files.
        """
        with self._db.sessions() as session:
            item = storage.get_item(session, collection_id=self.id, item_id=item_id)
            uri, expected = item.source_uri, item.content_hash
        try:
            path = self._source_path(uri, allowed_roots)
            data = read_regular_file(path, max_bytes=max_bytes)
        except (OSError, ValueError) as exc:
            logger.debug("item %s: source %r unavailable: %s", item_id, uri, exc)
            raise SourceUnavailableError(item_id, str(exc)) from None
        if content_hash(data) != expected:
            raise SourceUnavailableError(item_id, "the file changed since it was ingested")
        return data

    def _source_path(self, uri: str, allowed_roots: Sequence[str | os.PathLike[str]] | None) -> str:
        """The resolved file to read for a source URI; ValueError when there is none to read."""
        if uri.startswith(UPLOAD_SCHEME):
            path = self.uploads.path_for(uri)
            if path is None:
                raise ValueError("not a kept upload")
            return os.path.realpath(path)
        if "\x00" in uri or not os.path.isabs(uri):
            raise ValueError("not an absolute local path")
        resolved = os.path.realpath(uri)
        if allowed_roots is not None and not is_inside(resolved, allowed_roots):
            raise ValueError("outside the allowed source roots")
        return resolved

    def codes(self, item_id: int) -> np.ndarray:
        """The stored codes of one item, shape (num_subvectors,)."""
        dtype = self._require_codec().code_dtype
        with self._db.sessions() as session:
            item = storage.get_item(session, collection_id=self.id, item_id=item_id)
            return np.frombuffer(item.codes, dtype=dtype.newbyteorder("<")).astype(dtype)

    def search(
        self,
        text: str | None = None,
        *,
        image: str | Path | bytes | None = None,
        item: int | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        rerank: int | None = DEFAULT_RERANK,
    ) -> list[SearchHit]:
        """Top-``k`` items for a text, an image (path or bytes) or an existing item id.

        Scores are cosine similarities between the query embedding and the decoded codes
        (exact for the ``rerank`` best ADC candidates; ``rerank=None`` returns raw ADC
        inner products). ``where`` keeps items whose metadata has every given key/value;
        ``min_score`` drops weaker hits.
        """
        given = [q is not None for q in (text, image, item)]
        if sum(given) != 1:
            raise QueryError("give exactly one of text, image or item")
        if k < 1:
            raise QueryError("k must be at least 1")
        query = self.embed_query(text=text, image=image, item=item)
        return self.search_vector(query, k=k, where=where, min_score=min_score, rerank=rerank)

    def embed_query(self, *, text: str | None = None, image: str | Path | bytes | None = None, item: int | None = None) -> np.ndarray:
        """The float query vector (1, dim) for a text, an image or a stored item."""
        if text is not None:
            if not text.strip():
                raise QueryError("the text query is empty")
            return self.encoder.encode_texts([text])
        if image is not None:
            source = Path(image).expanduser() if isinstance(image, str | Path) else image
            encoder = self.encoder
            decoded = open_image(
                source,
                max_pixels=self._db.settings.max_image_pixels,
                min_edge=encoder.image_edge,
                budget=self._db.pixel_budget,
            )
            return encoder.encode_images([decoded])
        assert item is not None
        return self._require_codec().refined_decode(self.codes(item)[None, :])

    def search_vector(
        self,
        query: np.ndarray,
        *,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        rerank: int | None = DEFAULT_RERANK,
    ) -> list[SearchHit]:
        """Search with a ready float query vector (1, dim).

        Through a sharded deployment (:attr:`Database.shard_search`) a shard that did not
        answer is logged and its items are missing: :meth:`search_result` says which.
        """
        result = self.search_result(query, k=k, where=where, min_score=min_score, rerank=rerank)
        if result.partial:
            logger.warning("search of %r: shards %s of %d did not answer; their items are missing",
                           self.name, result.missing_shards, result.shard_count)  # fmt: skip
        return result.hits

    def search_result(
        self,
        query: np.ndarray,
        *,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        rerank: int | None = DEFAULT_RERANK,
    ) -> SearchResult:
        """:meth:`search_vector`'s hits, and the shards missing from them (none without shards)."""
        if k < 1:
            raise QueryError("k must be at least 1")
        checked = check_filter(where, max_keys=self._db.settings.max_filter_keys) if where else None
        vector = np.asarray(query, dtype=np.float32).reshape(1, -1)
        sharded = self._db.shard_search
        if sharded is not None:
            result = sharded.search(self, vector, k=k, where=checked, rerank=rerank)
            if min_score is not None:
                result.hits = [hit for hit in result.hits if hit.score >= min_score]
            return result
        return SearchResult(self._search_vector_here(vector, k, checked, min_score, rerank))

    def _search_vector_here(
        self, vector: np.ndarray, k: int, checked: dict[str, Any] | None, min_score: float | None, rerank: int | None
    ) -> list[SearchHit]:
        try:
            return self._search_once(vector, k, checked, min_score, rerank)
        except storage.ConnectionLostError:
            logger.info("search: the database dropped the connection; retrying on a new one")
            return self._search_once(vector, k, checked, min_score, rerank)

    def _search_once(
        self, vector: np.ndarray, k: int, where: dict[str, Any] | None, min_score: float | None, rerank: int | None
    ) -> list[SearchHit]:
        service, engine = self.index_service, self._db.reads
        with engine.connect() as connection:
            reads = storage.SearchReads(connection)
            try:
                # Optimistic: search the index in memory and check it against the revision
                # that comes back with the hit rows (one statement). Every write committed
                # before this call has a revision <= that one, so if the index covers it the
                # answer is exact; only a write of another process (or the first search)
                # costs a catch-up and a second pass.
                index, checked = service.loaded, False
                if index is None:
                    index, checked = service.fresh(reads.revision(self.id)), True
                selective = False
                while True:
                    pairs, cached = self._top_pairs(index, vector, k, rerank, where, min_score, connection, selective)
                    rows, stored = reads.hit_rows(self.id, [i for _, i in pairs])
                    if cached is not None and cached != stored.revision:
                        assert where is not None  # a filter's remembered ids are out of date: look
                        self.filters.discard(filter_key(where), cached)  # them up again, directly
                        index, checked, selective = service.fresh(stored), True, True
                        continue
                    if checked or service.fresh_as_of(stored) is index:
                        break
                    index, checked = service.fresh(stored), True
            except DBAPIError as exc:
                # A dropped connection: SQLAlchemy has invalidated it and the pool's older
                # connections already; the caller retries once on a new one.
                if not exc.connection_invalidated:
                    raise
                raise storage.ConnectionLostError("the database dropped the connection") from exc
        return hits_for_pairs(rows, pairs)

    def _top_pairs(
        self, index: SearchIndex | None, vector: np.ndarray, k: int, rerank: int | None,
        where: dict[str, Any] | None, min_score: float | None, reader: storage.Reader, selective: bool = False,
    ) -> tuple[list[tuple[float, int]], int | None]:
        """``(score, id)`` of the best items of ``index`` (none without an index), and the
        revision of the remembered filter ids used, if any (the caller checks it)."""
        if index is None or len(index) == 0:
            return [], None
        cached = None
        if where:
            scores, ids, cached = self._filtered_search(index, vector, k, rerank, where, reader, selective)
        else:
            scores, ids = index.search(vector, k, rerank=rerank)
        pairs = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        if min_score is not None:
            pairs = [(s, i) for s, i in pairs if s >= min_score]
        return pairs, cached

    def _filtered_search(
        self, index: SearchIndex, vector: np.ndarray, k: int, rerank: int | None, where: dict[str, Any],
        reader: storage.Reader, selective: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, int | None]:
        """:func:`semstore.filtered_search.filtered_search` with the filter answered from the
        metadata columns beside the index when they hold its keys (no SQL), else from the database."""
        columns = self.index_service.columns
        source: FilterSource
        if columns is not None and columns.covers(where):
            source = ColumnsFilter(columns, where, self.column_filters)
        else:
            source = DatabaseFilter(reader, self.id, where, self.filters)
        return filtered_search(index, vector, k, rerank, source, selective=selective)

    def backfill_exif(self, *, progress: bool = False) -> BackfillReport:
        """Read and store the EXIF facts of items stored before ingest read them (see
        :mod:`semstore.exif_backfill`)."""
        from semstore.exif_backfill import backfill_exif

        return backfill_exif(self, progress=progress)

    def classify(
        self, labels: Sequence[str], *, template: str = "a photo of a {}.", progress: bool = False
    ) -> Classification:
        """Zero-shot classification of every item from its codes alone (the paper's protocol).

        Each label becomes a text prompt (``template``), and every item gets the label whose
        prompt embedding has the highest cosine with the item's decoded embedding.
        """
        clean = [label.strip() for label in labels if label and label.strip()]
        if len(clean) < 2 or len(set(clean)) != len(clean):
            raise QueryError("give at least two distinct, non-empty labels")
        index = self.index
        codec = self.codec
        prompts = self.encoder.encode_texts([template.format(label) for label in clean])
        if index is None or codec is None or len(index) == 0:
            return classify_codes(codec, clean, prompts, np.empty(0, np.int64), None)
        ids = index.ids()
        return classify_codes(codec, clean, prompts, ids, index.codes_for(ids))

    def stats(self) -> CollectionStats:
        """Items, bytes of codes per item, bits per vector and per source pixel, codec config,
        and the loaded index's kind and RAM per item (never loads one)."""
        codec = self.codec
        described = self.index_service.describe()
        with self._db.sessions() as session:
            count, code_bytes = storage.collection_stats(session, collection_id=self.id)
            pixels = storage.collection_pixels(session, collection_id=self.id)
        bits = codec.bits_per_vector if codec else None
        return CollectionStats(
            name=self.name,
            items=count,
            code_bytes=code_bytes,
            bytes_per_item=code_bytes / count if count else 0.0,
            bits_per_vector=bits,
            bits_per_pixel=(bits * count / pixels) if bits and pixels else None,
            model=self.model,
            pretrained=self.pretrained,
            dim=self.dim,
            codec_hash=codec.content_hash if codec else None,
            codec_config=codec.config.to_dict() if codec else None,
            neural_decoder=codec is not None and codec.neural_decoder is not None,
            index_kind=described.kind if described else None,
            index_bytes_per_item=round(described.bytes_per_item, 3) if described else None,
            index_nlist=described.nlist if described else None,
            index_nprobe=described.nprobe if described else None,
            metadata_keys_in_memory=described.metadata_keys if described else (),
            metadata_bytes_per_item=round(described.metadata_bytes / described.items, 3) if described and described.items else None,
        )

    # -- internals -----------------------------------------------------------------------
    def _pipeline(self) -> IngestPipeline:
        settings = self._db.settings
        if self.codec is not None and self._db.shard_search is None and self._db.holds_indexes:
            # Load the index first, so this ingest's rows are applied in place (a sharded
            # deployment's ingress, or a database opened with indexes=False, holds no index:
            # the processes that do catch up by themselves).
            self.index  # noqa: B018
        return IngestPipeline(
            sessions=self._db.sessions,
            collection_id=self.id,
            encoder=self.encoder,
            codec=self.codec,
            codec_id=self._codec_id if self._codec is not None else None,
            codec_factory=self._db.new_codec,
            batch_size=settings.batch_size,
            bootstrap_size=settings.codec_bootstrap_size,
            max_pixels=settings.max_image_pixels,
            pixel_budget=self._db.pixel_budget,
            on_items_added=self.index_service.apply_added,
            on_codec_trained=self._codec_trained,
        )

    def _require_codec(self) -> PQVAECodec:
        codec = self.codec
        if codec is None:
            raise QueryError(f"collection {self.name!r} has no items yet")
        return codec

    def _codec_trained(self, codec: PQVAECodec, codec_id: int) -> None:
        with self._codec_lock:
            self._codec, self._codec_id = codec, codec_id
        self.index_service.codec_changed()

    def _forget_codec(self) -> None:
        """Re-read the codec on next use (the service rebuilds only if its id changed)."""
        with self._codec_lock:
            self._codec = None

    def sync_index(self) -> None:
        """After an ingest (this process's, or another's such as the server's ingest worker):
        have an index caught up with every committed write (built once after the codec was
        trained), of the kind the collection's size calls for, and save it when that is worth
        it. Nothing in a database opened with ``indexes=False``."""
        if not self._db.holds_indexes:
            return
        if self.codec is not None:
            self.index  # noqa: B018 - caught up too, should another process have written meanwhile
        if not self.index_service.migrate_if_needed():  # a switch of index kind saves by itself
            self.index_service.save()
