"""Previews of stored images for the search page: small JPEGs, and the original's media type."""

from __future__ import annotations

import io

from PIL import Image

from semstore.ingest.budget import PixelBudget
from semstore.ingest.images import ALLOWED_FORMATS, BadImageError, open_image

#: Largest edge a thumbnail may be asked for.
MAX_THUMBNAIL_SIZE = 1024


def make_thumbnail(
    data: bytes, *, size: int, max_pixels: int, quality: int = 85, budget: PixelBudget | None = None
) -> bytes:
    """A JPEG of the image in ``data`` fitting in ``size`` x ``size`` (never enlarged).

    Decoding goes through :func:`semstore.ingest.open_image` (same format allow-list and
    pixel limit as ingest, decoded no larger than the thumbnail needs, within ``budget``);
    raises its ``BadImageError`` for an unreadable image.
    """
    if not 1 <= size <= MAX_THUMBNAIL_SIZE:
        raise ValueError(f"thumbnail size must be within 1..{MAX_THUMBNAIL_SIZE}, got {size}")
    image = open_image(data, max_pixels=max_pixels, min_edge=size, budget=budget)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


def image_media_type(data: bytes) -> str:
    """The MIME type of the image in ``data`` (one of the ingest formats), read from its header
    without decoding pixels; raises ``BadImageError`` for anything else."""
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            kind = image.format
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImageError(f"not a readable image ({exc})") from exc
    mime = Image.MIME.get(kind or "")
    if mime is None:
        raise BadImageError(f"no media type for image format {kind!r}")
    return mime
