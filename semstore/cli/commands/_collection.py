"""Opening or creating the collection a command works on."""

from pathlib import Path
from typing import TYPE_CHECKING

from semstore.cli.errors import CliError

if TYPE_CHECKING:
    from semstore.collection import Collection
    from semstore.database import Database


def get_or_create(database: "Database", name: str, *, codec: Path | None) -> tuple["Collection", bool]:
    """The collection ``name``, created with the settings' model (and ``codec``) if missing.

    Returns ``(collection, created)``. An existing collection must already use ``codec``
    when one is given: codes of different codecs are not comparable.
    """
    from semstore.storage import CollectionNotFoundError

    try:
        collection = database.collection(name)
    except CollectionNotFoundError:
        # (the pretrained tag is left to create_collection: it is the settings' one, except for
        # the tiny test model, which has no weights to name)
        created = database.create_collection(name, model=database.settings.model, codec=codec)
        return created, True
    if codec is not None:
        check_codec(collection, codec)
    return collection, False


def check_codec(collection: "Collection", path: Path) -> None:
    """Raise :class:`CliError` unless ``collection`` already uses the codec saved in ``path``."""
    from semstore.codec import PQVAECodec

    wanted = PQVAECodec.load(path).content_hash
    current = collection.codec
    if current is None:
        raise CliError(
            f"collection {collection.name!r} already exists without a codec (it trains one on its first ingest); "
            "--codec only applies to new collections"
        )
    if current.content_hash != wanted:
        raise CliError(
            f"collection {collection.name!r} uses codec {current.content_hash[:12]}, "
            f"not {wanted[:12]} from {path}"
        )


def database_label(database: "Database") -> str:
    """The database URL without its password, for messages."""
    return database.engine.url.render_as_string(hide_password=True)
