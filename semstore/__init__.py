"""semstore: a compressed semantic vector database for images.

Images are embedded with CLIP, compressed to a few bytes each by a PQ-VAE codec with one
shared codebook, stored as codes in SQLite or PostgreSQL and searched by asymmetric
distance computation::

    import semstore
    db = semstore.connect("sqlite:///photos.db")
    photos = db.create_collection("photos", exist_ok=True)
    photos.add(["~/Pictures"])
    hits = photos.search("a dog on a beach", k=10)

Attributes are imported lazily so that ``semstore --help`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "connect": "semstore.database",
    "Database": "semstore.database",
    "Collection": "semstore.collection",
    "CollectionStats": "semstore.collection",
    "QueryError": "semstore.collection",
    "SearchHit": "semstore.search",
    "SearchResult": "semstore.search",
    "Classification": "semstore.search",
    "IngestReport": "semstore.ingest.pipeline",
    "IngestError": "semstore.ingest.pipeline",
    "IngestInterrupted": "semstore.ingest.pipeline",
    "PQVAECodec": "semstore.codec",
    "Settings": "semstore.config",
    "get_settings": "semstore.config",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from semstore.codec import PQVAECodec
    from semstore.collection import Collection, CollectionStats, QueryError
    from semstore.config import Settings, get_settings
    from semstore.database import Database, connect
    from semstore.ingest.pipeline import IngestError, IngestInterrupted, IngestReport
    from semstore.search import Classification, SearchHit, SearchResult


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'semstore' has no attribute {name!r}")
