"""The entry point of the library: :func:`connect` returns a :class:`Database` of collections."""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session

from semstore import storage
from semstore.codec import PQVAECodec
from semstore.collection import Collection
from semstore.config import Settings, get_settings
from semstore.encoders import TINY_TEST_MODEL, Encoder, build_encoder
from semstore.index_service import IndexPolicy, IndexService, revisions_of
from semstore.ingest.budget import PixelBudget
from semstore.names import UnsafePathError, check_collection_name, child_folder
from semstore.sharding import ShardSearch

EncoderFactory = Callable[[str, "str | None"], Encoder]

logger = logging.getLogger(__name__)


class Database:
    """A semstore database (SQLite file or PostgreSQL) holding named collections.

    Components are injectable: ``encoder_factory(model, pretrained)`` builds encoders (one
    per model, the ``settings.max_loaded_encoders`` most recently used kept loaded),
    ``settings`` carries every default; ``pixel_budget`` bounds the pixels its collections
    decode at once (``settings.max_decode_pixels``, over all threads).

    ``indexes=False`` opens a writer that holds no index: its ingests never load, build or
    save one (e.g. the server's ingest worker process, whose writes the server's own index
    catches up with through the collection's revision, like another replica's).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        encoder_factory: EncoderFactory | None = None,
        migrate: bool = True,
        create: bool = True,
        indexes: bool = True,
    ) -> None:
        self.settings = settings or get_settings()
        self.holds_indexes = indexes
        self.url = storage.normalize_database_url(url or self.settings.resolved_database_url())
        if migrate:
            storage.upgrade_head(self.url, create=create)
        elif not create:
            storage.require_database(self.url)
        self.engine = storage.create_db_engine(self.url)
        self.sessions = storage.session_factory(self.engine)
        self.reads = storage.read_engine(self.engine)  # ``with db.reads.connect()``: the search path's reads
        self._injected_encoder_factory = encoder_factory
        self._encoder_factory = encoder_factory or self._default_encoder
        self._encoders: OrderedDict[tuple[str, str | None], Encoder] = OrderedDict()
        self._collections: dict[str, Collection] = {}
        self._lock = threading.RLock()
        self.pixel_budget = PixelBudget(self.settings.max_decode_pixels)
        self._services: dict[int, IndexService] = {}
        self._shard_services: dict[tuple[int, storage.Shard], IndexService] = {}
        self._shard_search: ShardSearch | None = None
        # Tell each collection's index service which revisions this process committed itself.
        # (before the commit: a search that reads the new revision right after it must already
        # know it as this process's own write in flight, not take it for another process's)
        event.listen(self.sessions, "before_commit", self._before_commit)
        event.listen(self.sessions, "after_commit", storage.forget_written_revisions)
        event.listen(self.sessions, "after_rollback", self._after_rollback)

    # -- collections -----------------------------------------------------------------------
    def create_collection(
        self,
        name: str,
        *,
        model: str | None = None,
        pretrained: str | None = None,
        codec: PQVAECodec | str | Path | None = None,
        exist_ok: bool = False,
    ) -> Collection:
        """Create a collection for images embedded by ``model``/``pretrained`` (defaults: settings).

        ``codec`` (a trained :class:`PQVAECodec` or its file) is reused instead of training a
        new one, making the codes comparable with every collection sharing it.
        """
        check_collection_name(name)
        model = model or self.settings.model
        if pretrained is None and model == self.settings.model and model != TINY_TEST_MODEL:
            pretrained = self.settings.pretrained or None
        if exist_ok:
            try:
                return self.collection(name)
            except storage.CollectionNotFoundError:
                pass
        encoder = self.encoder(model, pretrained)
        trained = PQVAECodec.load(codec) if isinstance(codec, str | Path) else codec
        if trained is not None and trained.dim != encoder.dim:
            raise ValueError(f"the codec expects {trained.dim}-d embeddings but {model} produces {encoder.dim}-d")
        with storage.transaction(self.sessions) as session:
            codec_id = None
            if trained is not None:
                row = storage.save_codec(
                    session, content_hash=trained.content_hash, config=trained.config.to_dict(), weights=trained.to_bytes()
                )
                codec_id = row.id
            record = storage.create_collection(
                session, name=name, model=model, pretrained=pretrained, dim=encoder.dim, codec_id=codec_id
            )
            collection = Collection(self, record)
        with self._lock:
            self._collections[name] = collection
        return collection

    def collection(self, name: str) -> Collection:
        """Open an existing collection (raises ``CollectionNotFoundError``)."""
        with self._lock:
            cached = self._collections.get(name)
            with self.sessions() as session:
                record = storage.get_collection(session, name=name)
                if cached is not None and (cached.id, cached.model, cached.pretrained, cached.dim) == (
                    record.id, record.model, record.pretrained, record.dim
                ):
                    return cached  # (a re-created collection may reuse an id on SQLite; its codec is re-read)
                collection = Collection(self, record)
            self._collections[name] = collection
            return collection

    def collections(self) -> list[Collection]:
        """All collections, by name."""
        with self.sessions() as session:
            names = [record.name for record in storage.list_collections(session)]
        return [self.collection(name) for name in sorted(names)]

    def delete_collection(self, name: str) -> None:
        """Delete a collection, all its items, its saved index and the kept originals of its uploads.

        Only the collection's own folders are removed; a folder that its name cannot safely
        address (a name stored before names were checked) is left alone.
        """
        with storage.transaction(self.sessions) as session:
            doomed = Collection(self, storage.get_collection(session, name=name))
            storage.delete_collection(session, name=name)
        folders = (
            lambda: self.index_directory(doomed),
            lambda: self.shard_index_root(doomed),
            lambda: self.settings.upload_directory(name),
        )
        for folder in folders:
            try:
                path = folder()
            except UnsafePathError as exc:
                logger.warning("collection %r deleted, its files were left in place: %s", name, exc)
                continue
            shutil.rmtree(path, ignore_errors=True)
        with self._lock:
            self._collections.pop(name, None)
            self._services.pop(doomed.id, None)
            for key in [key for key in self._shard_services if key[0] == doomed.id]:
                del self._shard_services[key]

    def index_service(self, collection: Collection) -> IndexService:
        """The index service of a collection (one per collection id and database)."""
        with self._lock:
            service = self._services.get(collection.id)
            if service is None:
                service = self._services[collection.id] = self._new_index_service(collection, None)
            return service

    def _new_index_service(self, collection: Collection, shard: storage.Shard | None) -> IndexService:
        return IndexService(
            sessions=self.sessions,
            collection_id=collection.id,
            codec_source=collection.codec_and_id,
            directory=lambda: self._safe_index_directory(collection, shard),
            policy=IndexPolicy.from_settings(self.settings),
            shard=shard,
        )

    @property
    def shard_search(self) -> ShardSearch | None:
        """The sharded search collections answer through (None: each searches its own index)."""
        return self._shard_search

    def use_shard_search(self, search: ShardSearch | None) -> None:
        """Answer every collection's searches through ``search`` (e.g. the shard deployments of
        :func:`semstore.distributed.shard_serving.deploy_shards`); None: back to the own index."""
        self._shard_search = search

    def shard_index_service(self, collection: Collection, shard: storage.Shard) -> IndexService:
        """The index service of one shard of a collection (its items with ``id % count == number``).

        What a shard replica serves (see :mod:`semstore.sharding`). It catches up from the
        database like a replica, this process's own writes included (they are applied in place
        only to the collection's whole index).
        """
        key = (collection.id, shard)
        with self._lock:
            service = self._shard_services.get(key)
            if service is None:
                service = self._shard_services[key] = self._new_index_service(collection, shard)
            return service

    def _safe_index_directory(self, collection: Collection, shard: storage.Shard | None = None) -> Path | None:
        try:
            if shard is not None:
                return child_folder(self.shard_index_root(collection), shard.label)
            return self.index_directory(collection)
        except UnsafePathError:
            return None

    def _before_commit(self, session: Session) -> None:
        for collection_id, revisions in revisions_of(session).items():
            service = self._services.get(collection_id)
            if service is not None:
                service.committed(revisions)

    def _after_rollback(self, session: Session) -> None:
        for collection_id, revisions in revisions_of(session).items():
            service = self._services.get(collection_id)
            if service is not None:
                service.rolled_back(revisions)
        storage.forget_written_revisions(session)

    # -- components ------------------------------------------------------------------------
    def encoder(self, model: str, pretrained: str | None) -> Encoder:
        """The encoder for a model and pretrained tag or checkpoint (loaded once, LRU-cached)."""
        key = (model, pretrained)
        with self._lock:
            cached = self._encoders.get(key)
            if cached is not None:
                self._encoders.move_to_end(key)
                return cached
            encoder = self._encoder_factory(model, pretrained)
            self._encoders[key] = encoder
            while len(self._encoders) > self.settings.max_loaded_encoders:
                evicted, _ = self._encoders.popitem(last=False)
                logger.info("released encoder %s/%s (max_loaded_encoders=%d)", *evicted, self.settings.max_loaded_encoders)
            return encoder

    def loaded_encoders(self) -> list[tuple[str, str | None]]:
        """``(model, pretrained)`` of the encoders now loaded, least recently used first."""
        with self._lock:
            return list(self._encoders)

    def new_codec(self, dim: int) -> PQVAECodec:
        """An untrained codec with the configured defaults, for a collection's bootstrap."""
        return PQVAECodec(
            dim=dim,
            num_subvectors=self.settings.codec_num_subvectors,
            codebook_size=self.settings.codec_codebook_size,
            beam_size=self.settings.codec_beam_size,
            neural_decoder=self.settings.codec_neural_decoder,
        )

    def index_directory(self, collection: Collection) -> Path:
        """Where a collection's saved index lives (per database, per collection).

        Beside a SQLite file, in ``<file>.indexes/`` (``./photos.db`` keeps its indexes in
        ``./photos.db.indexes/``), so a database and the files derived from it stay together;
        for PostgreSQL (and in-memory SQLite) under ``data_dir/indexes``, keyed by the URL.
        An index is derived data: one missing or out of date is rebuilt from the codes.
        Raises :class:`semstore.names.UnsafePathError` for a name that is no safe folder name.
        """
        database_file = storage.sqlite_path(self.url)
        if database_file is not None:
            return child_folder(database_file.with_name(database_file.name + ".indexes"), f"{collection.id}-{collection.name}")
        database_key = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        return child_folder(self.settings.data_dir.expanduser() / "indexes", f"{database_key}-{collection.id}-{collection.name}")

    def shard_index_root(self, collection: Collection) -> Path:
        """The folder of a collection's shard indexes (``shard-N-of-S`` each), beside its index."""
        whole = self.index_directory(collection)
        return child_folder(whole.parent, whole.name + ".shards")

    def close(self) -> None:
        """Save every index with unsaved changes, then release database connections."""
        with self._lock:
            services = [*self._services.values(), *self._shard_services.values()]
        for service in services:
            try:
                service.save(force=True)
            except Exception as exc:  # noqa: BLE001 - a failed save only costs a catch-up at the next start
                logger.warning("could not save an index on close: %s", exc)
        if self.reads is not self.engine:
            self.reads.dispose()
        self.engine.dispose()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"

    def _default_encoder(self, model: str, pretrained: str | None) -> Encoder:
        settings = self.settings
        return build_encoder(model, pretrained, device=settings.device, threads=settings.threads, batch_size=settings.batch_size)

    @property
    def injected_encoder_factory(self) -> EncoderFactory | None:
        """The ``encoder_factory`` this database was given (None: the default open_clip one),
        for workers elsewhere (Ray actors) that must build the same encoders."""
        return self._injected_encoder_factory


def connect(
    url: str | None = None,
    *,
    settings: Settings | None = None,
    encoder_factory: EncoderFactory | None = None,
    create: bool = True,
) -> Database:
    """Open (creating and migrating if needed) a semstore database.

    ``url`` is a SQLAlchemy URL such as ``sqlite:///photos.db`` or
    ``postgresql+psycopg://user@host/db``; by default a SQLite file in the data directory.
    ``create=False`` opens only an existing one (:class:`~semstore.storage.DatabaseNotFoundError`
    otherwise, with nothing created), as read-only commands do.
    """
    return Database(url, settings=settings, encoder_factory=encoder_factory, create=create)
