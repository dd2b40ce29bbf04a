"""Storage layer: SQLAlchemy models, engine and sessions, migrations, repository functions.

Only compressed codes are stored (one small binary column per item), never float
embeddings. Typical use::

    from semstore.storage import create_db_engine, session_factory, transaction, upgrade_head

    upgrade_head(url)
    sessions = session_factory(create_db_engine(url))
    with transaction(sessions) as session:
        collection = create_collection(session, name="photos", model="ViT-B-32", pretrained=None, dim=512)
"""

from semstore.storage.engine import (
    SQLITE_PRAGMAS,
    create_db_engine,
    normalize_database_url,
    session_factory,
    transaction,
)
from semstore.storage.errors import (
    ApiKeyExistsError,
    ApiKeyNotFoundError,
    CodecNotFoundError,
    CollectionExistsError,
    CollectionNotFoundError,
    CorruptCodesError,
    DuplicateItemError,
    ItemNotFoundError,
    MigrationError,
    StorageError,
)
from semstore.storage.migrate import current_revision, head_revision, upgrade_head
from semstore.storage.models import API_KEY_SCOPES, ApiKey, Base, Codec, Collection, Item
from semstore.storage.repository import (
    CollectionFingerprint,
    CollectionState,
    NewItem,
    add_items,
    collection_fingerprint,
    collection_pixels,
    collection_state,
    collection_stats,
    create_api_key,
    create_collection,
    delete_collection,
    delete_items,
    existing_hashes,
    filter_item_ids,
    find_api_key,
    get_codec,
    get_collection,
    get_collection_by_id,
    get_item,
    get_items,
    item_ids,
    list_api_keys,
    list_collections,
    load_codes,
    pack_codes,
    revoke_api_key,
    save_codec,
    set_collection_codec,
    touch_api_key,
    update_item_metadata,
)

__all__ = [
    "API_KEY_SCOPES",
    "SQLITE_PRAGMAS",
    "ApiKey",
    "ApiKeyExistsError",
    "ApiKeyNotFoundError",
    "Base",
    "Codec",
    "CodecNotFoundError",
    "Collection",
    "CollectionExistsError",
    "CollectionFingerprint",
    "CollectionNotFoundError",
    "CollectionState",
    "CorruptCodesError",
    "DuplicateItemError",
    "Item",
    "ItemNotFoundError",
    "MigrationError",
    "NewItem",
    "StorageError",
    "add_items",
    "collection_fingerprint",
    "collection_pixels",
    "collection_state",
    "collection_stats",
    "create_api_key",
    "create_collection",
    "create_db_engine",
    "current_revision",
    "delete_collection",
    "delete_items",
    "existing_hashes",
    "filter_item_ids",
    "find_api_key",
    "get_codec",
    "get_collection",
    "get_collection_by_id",
    "get_item",
    "get_items",
    "head_revision",
    "item_ids",
    "list_api_keys",
    "list_collections",
    "load_codes",
    "normalize_database_url",
    "pack_codes",
    "revoke_api_key",
    "save_codec",
    "session_factory",
    "set_collection_codec",
    "touch_api_key",
    "transaction",
    "update_item_metadata",
    "upgrade_head",
]
