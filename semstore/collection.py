"""A collection of compressed images: ingest, search, zero-shot classification, stats.

:class:`Collection` is the object users get from :meth:`semstore.Database.collection`;
the CLI and the HTTP server call exactly these methods.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from semstore import storage
from semstore.codec import PQVAECodec
from semstore.index import ADCIndex, IndexVersion
from semstore.ingest.images import IMAGE_EXTENSIONS, content_hash, open_image
from semstore.ingest.pipeline import BytesSource, IngestPipeline, IngestReport
from semstore.replica import catch_up
from semstore.search import Classification, SearchHit, classify_codes, hits_from_rows

if TYPE_CHECKING:
    from semstore.database import Database
    from semstore.distributed import RayIngestOptions
    from semstore.encoders import Encoder

#: Candidates re-scored exactly (decoded, cosine) by default after the ADC pass.
DEFAULT_RERANK = 100


class QueryError(ValueError):
    """A search request is malformed (no query, two queries, unknown item, ...)."""


class SourceUnavailableError(LookupError):
    """An item's original image cannot be read (not a local file, missing, or changed since ingest)."""


#: Scheme of the source URIs of images added as bytes: ``upload://<content hash>/<file name>``.
UPLOAD_SCHEME = "upload://"

# 32 hex: content_hash() since schema 0002; 64 hex: the full SHA-256 in URIs stored before it.
_UPLOAD_URI = re.compile(r"^upload://([0-9a-f]{32}|[0-9a-f]{64})/(.*)$", re.DOTALL)
_UNSAFE_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_MAX_NAME_CHARS = 200


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
        self._index: ADCIndex | None = None
        self._index_version: IndexVersion | None = None
        self._lock = threading.RLock()

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
        with self._lock:
            if self._codec is None:
                with self._db.sessions() as session:
                    record = storage.get_collection_by_id(session, collection_id=self.id)
                    if record.codec_id is None:
                        return None
                    row = storage.get_codec(session, codec_id=record.codec_id)
                    self._codec, self._codec_id = PQVAECodec.from_bytes(row.weights), row.id
            return self._codec

    @property
    def index(self) -> ADCIndex | None:
        """The search index, in step with the database (rebuilt or reloaded when stale)."""
        with self._lock:
            codec = self.codec
            if codec is None:
                return None
            state = self._state()
            version = IndexVersion(codec.content_hash, state.count, state.max_id, state.revision)
            if self._index is not None and self._index_version == version:
                return self._index
            if self._index is not None and self._index.codec.content_hash == codec.content_hash:
                # Another process wrote: apply only the difference (see semstore.replica).
                self._index_version = catch_up(self._index, sessions=self._db.sessions, collection_id=self.id).version
                return self._index
            directory = self._db.index_directory(self)
            self._index, _rebuilt = ADCIndex.load_or_build(directory, codec, version, self._load_codes)
            self._index_version = version
            return self._index

    @property
    def loaded_index(self) -> ADCIndex | None:
        """The index if it is already in memory (never builds or loads one)."""
        return self._index

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
        added / skipped and failures with reasons.
        """
        with self._lock:
            if ray is not None:
                from semstore.distributed import ray_ingest

                try:
                    return ray_ingest(self, sources, options=ray, metadata=metadata, progress=progress)
                finally:
                    self._codec = None  # the run may have attached a codec
                    self._sync_after_write(save=True)
            pipeline = self._pipeline(self.index)
            try:
                return pipeline.run(sources, metadata=metadata, progress=progress)
            finally:
                self._sync_after_write(save=True)

    def add_images(
        self,
        images: Sequence[tuple[str, bytes]],
        *,
        metadata: Mapping[str, Any] | None = None,
        keep_originals: bool = True,
    ) -> IngestReport:
        """Ingest images given as ``(file name, bytes)`` pairs (e.g. HTTP uploads).

        They go through the same pipeline as files; each is stored with the source URI
        ``upload://<content hash>/<file name>`` (see :func:`upload_uri`). With ``keep_originals``
        the bytes of every stored image are kept in the collection's upload folder
        (``settings.upload_directory(name)``) so that :meth:`source_bytes` can read them.
        """
        sources = [BytesSource(upload_uri(name, data), bytes(data)) for name, data in images]
        with self._lock:
            created: list[Path] = []
            if keep_originals:
                for source in sources:
                    path = self._upload_path(source.uri)
                    if path is not None and not path.exists():
                        _write_atomically(path, source.data)
                        created.append(path)
            index = self.index
            pipeline = self._pipeline(index)
            try:
                report = pipeline.run_bytes(sources, metadata=metadata, progress=False)
            except BaseException:
                _unlink_all(created)
                raise
            finally:
                self._sync_after_write(save=True)
            _unlink_all(self._unreferenced_uploads(created, report))
            return report

    def _unreferenced_uploads(self, created: list[Path], report: IngestReport) -> list[Path]:
        """The kept originals this ingest wrote that no item refers to: those of failed images,
        and of duplicates skipped because an item stored under another URI (e.g. an upload
        named by the longer hash used before schema 0002) already holds the same content."""
        referenced = {self._upload_path(uri) for uri, _ in report.added_items}
        unsure = [path for path in created if path not in referenced]
        if unsure:
            with self._db.sessions() as session:
                uris = storage.source_uris_by_hash(session, collection_id=self.id, hashes={p.stem for p in unsure})
            referenced |= {self._upload_path(uri) for uri in uris}
        return [path for path in created if path not in referenced]

    def delete(self, ids: Sequence[int]) -> int:
        """Delete items by id (and the kept originals of uploaded ones); returns how many existed."""
        wanted = [int(i) for i in ids]
        with self._lock:
            with storage.transaction(self._db.sessions) as session:
                uris = [row.source_uri for row in storage.get_items(session, collection_id=self.id, ids=wanted)]
                removed = storage.delete_items(session, collection_id=self.id, ids=wanted)
            if self._index is not None:
                self._index.remove(np.asarray(wanted, dtype=np.int64))
            self._sync_after_write(save=False)
            _unlink_all([path for path in map(self._upload_path, uris) if path is not None])
        return removed

    def update_metadata(self, item_id: int, metadata: Mapping[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Merge (or with ``replace=True`` replace) an item's metadata; returns the new metadata."""
        with storage.transaction(self._db.sessions) as session:
            item = storage.update_item_metadata(
                session, collection_id=self.id, item_id=item_id, metadata=dict(metadata), replace=replace
            )
            return dict(item.metadata_ or {})

    # -- reading -------------------------------------------------------------------------
    def get(self, item_id: int) -> SearchHit:
        """One item (score NaN) with its source URI and metadata."""
        with self._db.sessions() as session:
            item = storage.get_item(session, collection_id=self.id, item_id=item_id)
            return hits_from_rows([item], [float("nan")])[0]

    def source_bytes(self, item_id: int, *, max_bytes: int | None = None) -> bytes:
        """The original image bytes of an item, checked against the content hash stored at ingest.

        Only the item's own source is read: its file path, or the kept original of an
        upload. Raises :class:`SourceUnavailableError` when that source is not a local
        file, is missing, is larger than ``max_bytes``, or no longer has the same content.
        """
        with self._db.sessions() as session:
            item = storage.get_item(session, collection_id=self.id, item_id=item_id)
            uri, expected = item.source_uri, item.content_hash
        path = self._upload_path(uri) if uri.startswith(UPLOAD_SCHEME) else Path(uri)
        if path is None or not path.is_absolute():
            raise SourceUnavailableError(f"item {item_id} has no readable source ({uri!r})")
        try:
            with path.open("rb") as handle:
                data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
        except OSError as exc:
            raise SourceUnavailableError(f"the source of item {item_id} cannot be read: {exc.strerror or exc}") from exc
        if max_bytes is not None and len(data) > max_bytes:
            raise SourceUnavailableError(f"the source of item {item_id} is larger than {max_bytes} bytes")
        if content_hash(data) != expected:
            raise SourceUnavailableError(f"the source of item {item_id} changed since it was ingested")
        return data

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
            return self.encoder.encode_images([open_image(source, max_pixels=self._db.settings.max_image_pixels)])
        assert item is not None
        return self._require_codec().decode(self.codes(item)[None, :])

    def search_vector(
        self,
        query: np.ndarray,
        *,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        rerank: int | None = DEFAULT_RERANK,
    ) -> list[SearchHit]:
        """Search with a ready float query vector (1, dim)."""
        index = self.index
        if index is None or len(index) == 0:
            return []
        allowed = None
        if where:
            with self._db.sessions() as session:
                allowed = storage.filter_item_ids(session, collection_id=self.id, where=dict(where))
            if allowed.size == 0:
                return []
        scores, ids = index.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k, rerank=rerank, allowed_ids=allowed)
        pairs = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        if min_score is not None:
            pairs = [(s, i) for s, i in pairs if s >= min_score]
        if not pairs:
            return []
        with self._db.sessions() as session:
            rows = storage.get_items(session, collection_id=self.id, ids=[i for _, i in pairs])
        by_id = {row.id: row for row in rows}
        # An id deleted between search and lookup is dropped rather than returned dangling.
        kept = [(s, i) for s, i in pairs if i in by_id]
        return hits_from_rows([by_id[i] for _, i in kept], [s for s, _ in kept])

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
        """Items, bytes of codes per item, bits per vector and per source pixel, codec config."""
        codec = self.codec
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
        )

    # -- internals -----------------------------------------------------------------------
    def _pipeline(self, index: ADCIndex | None) -> IngestPipeline:
        settings = self._db.settings
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
            on_items_added=self._index_added if index is not None else None,
            on_codec_trained=self._codec_trained,
        )

    def _upload_path(self, uri: str) -> Path | None:
        """Where the kept original of an ``upload://`` URI lives (None for other URIs)."""
        match = _UPLOAD_URI.match(uri)
        if match is None:
            return None
        digest, name = match.groups()
        suffix = PurePosixPath(name).suffix.lower()
        suffix = suffix if suffix in IMAGE_EXTENSIONS else ""
        return self._db.settings.upload_directory(self.name) / f"{digest}{suffix}"

    def _require_codec(self) -> PQVAECodec:
        codec = self.codec
        if codec is None:
            raise QueryError(f"collection {self.name!r} has no items yet")
        return codec

    def _state(self) -> storage.CollectionState:
        with self._db.sessions() as session:
            return storage.collection_state(session, collection_id=self.id)

    def _load_codes(self) -> tuple[np.ndarray, np.ndarray]:
        codec = self._require_codec()
        with self._db.sessions() as session:
            return storage.load_codes(
                session, collection_id=self.id, num_subvectors=codec.num_subvectors, dtype=codec.code_dtype
            )

    def _index_added(self, ids: np.ndarray, codes: np.ndarray) -> None:
        if self._index is not None:
            self._index.add(ids, codes)

    def _codec_trained(self, codec: PQVAECodec, codec_id: int) -> None:
        self._codec, self._codec_id = codec, codec_id
        self._index = None

    def _sync_after_write(self, *, save: bool) -> None:
        """Adopt the database's new version if the in-memory index already matches it.

        Items this process wrote were applied to the index incrementally; if anybody else
        wrote meanwhile, the counts or ids disagree and the next access catches up.
        """
        codec = self.codec
        if codec is None:
            return
        state = self._state()
        index = self._index
        if index is not None:
            ids = index.ids()
            top = int(ids.max()) if ids.size else 0
            if len(index) == state.count and top == state.max_id:
                self._index_version = IndexVersion(codec.content_hash, state.count, state.max_id, state.revision)
        if save:
            current = self.index
            if current is not None:
                current.save(self._db.index_directory(self), self._index_version)


def upload_uri(name: str, data: bytes) -> str:
    """The source URI of an image added as bytes: ``upload://<content_hash(data)>/<base name>``.

    Only the last component of ``name`` is kept (no client path), without control
    characters and cut to 200 characters; an empty name becomes ``image``.
    """
    base = PurePosixPath(name.replace("\\", "/")).name
    base = _UNSAFE_NAME_CHARS.sub("", base)[:_MAX_NAME_CHARS] or "image"
    return f"{UPLOAD_SCHEME}{content_hash(data)}/{base}"


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _unlink_all(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
