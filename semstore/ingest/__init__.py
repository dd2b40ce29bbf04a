"""Ingest: image files -> embeddings -> codes -> database, resumable and fault tolerant."""

from semstore.ingest.images import IMAGE_EXTENSIONS, BadImageError, content_hash, open_image
from semstore.ingest.pipeline import (
    BytesSource,
    FailedSource,
    IngestError,
    IngestInterrupted,
    IngestPipeline,
    IngestReport,
)
from semstore.ingest.sources import SourceNotFoundError, iter_image_files

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "BytesSource",
    "FailedSource",
    "IngestError",
    "IngestInterrupted",
    "IngestPipeline",
    "IngestReport",
    "SourceNotFoundError",
    "content_hash",
    "iter_image_files",
    "open_image",
]
