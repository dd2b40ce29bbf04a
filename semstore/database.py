"""The entry point of the library: :func:`connect` returns a :class:`Database` of collections."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from semstore import storage
from semstore.codec import PQVAECodec
from semstore.collection import Collection
from semstore.config import Settings, get_settings
from semstore.encoders import TINY_TEST_MODEL, Encoder, OpenClipEncoder

EncoderFactory = Callable[[str, "str | None"], Encoder]


class Database:
    """A semstore database (SQLite file or PostgreSQL) holding named collections.

    Components are injectable: ``encoder_factory(model, pretrained)`` builds encoders (one
    per model, cached), ``settings`` carries every default.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        encoder_factory: EncoderFactory | None = None,
        migrate: bool = True,
    ) -> None:
        self.settings = settings or get_settings()
        self.url = storage.normalize_database_url(url or self.settings.resolved_database_url())
        if migrate:
            storage.upgrade_head(self.url)
        self.engine = storage.create_db_engine(self.url)
        self.sessions = storage.session_factory(self.engine)
        self._encoder_factory = encoder_factory or self._default_encoder
        self._encoders: dict[tuple[str, str | None], Encoder] = {}
        self._collections: dict[str, Collection] = {}
        self._lock = threading.RLock()

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
        _check_name(name)
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
                if cached is not None and cached.id == record.id:
                    return cached
                collection = Collection(self, record)
            self._collections[name] = collection
            return collection

    def collections(self) -> list[Collection]:
        """All collections, by name."""
        with self.sessions() as session:
            names = [record.name for record in storage.list_collections(session)]
        return [self.collection(name) for name in sorted(names)]

    def delete_collection(self, name: str) -> None:
        """Delete a collection, all its items, its saved index and the kept originals of its uploads."""
        with storage.transaction(self.sessions) as session:
            doomed = Collection(self, storage.get_collection(session, name=name))
            storage.delete_collection(session, name=name)
        shutil.rmtree(self.index_directory(doomed), ignore_errors=True)
        shutil.rmtree(self.settings.upload_directory(name), ignore_errors=True)
        with self._lock:
            self._collections.pop(name, None)

    # -- components ------------------------------------------------------------------------
    def encoder(self, model: str, pretrained: str | None) -> Encoder:
        """The (cached) encoder for a model and pretrained tag or checkpoint."""
        key = (model, pretrained)
        with self._lock:
            if key not in self._encoders:
                self._encoders[key] = self._encoder_factory(model, pretrained)
            return self._encoders[key]

    def new_codec(self, dim: int) -> PQVAECodec:
        """An untrained codec with the configured defaults, for a collection's bootstrap."""
        return PQVAECodec(
            dim=dim,
            num_subvectors=self.settings.codec_num_subvectors,
            codebook_size=self.settings.codec_codebook_size,
            beam_size=self.settings.codec_beam_size,
        )

    def index_directory(self, collection: Collection) -> Path:
        """Where a collection's saved index lives (per database, per collection)."""
        database_key = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        return self.settings.data_dir.expanduser() / "indexes" / f"{database_key}-{collection.id}-{collection.name}"

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"

    def _default_encoder(self, model: str, pretrained: str | None) -> Encoder:
        return OpenClipEncoder(
            model,
            pretrained,
            device=self.settings.device,
            threads=self.settings.threads,
            batch_size=self.settings.batch_size,
        )


def connect(
    url: str | None = None,
    *,
    settings: Settings | None = None,
    encoder_factory: EncoderFactory | None = None,
) -> Database:
    """Open (creating and migrating if needed) a semstore database.

    ``url`` is a SQLAlchemy URL such as ``sqlite:///photos.db`` or
    ``postgresql+psycopg://user@host/db``; by default a SQLite file in the data directory.
    """
    return Database(url, settings=settings, encoder_factory=encoder_factory)


def _check_name(name: str) -> None:
    if not name or len(name) > 128 or not all(ch.isalnum() or ch in "-_." for ch in name):
        raise ValueError(
            f"invalid collection name {name!r}: use 1-128 letters, digits, '-', '_' or '.'"
        )
