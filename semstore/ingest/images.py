"""Safe image decoding: turn untrusted files or bytes into RGB images, or a clear reason why not.

Every failure is a :class:`BadImageError` with a short human reason, so an ingest run can
record the bad file and go on. Pillow's global settings are never changed: truncated
images stay errors (no ``LOAD_TRUNCATED_IMAGES``) and ``Image.MAX_IMAGE_PIXELS`` is left
alone; the caller's ``max_pixels`` is checked against the size declared in the header,
before any pixel data is decoded.

Memory follows the pixels actually decoded: given the smallest edge the caller needs
(``min_edge``, e.g. the model's input size), a JPEG decodes at a reduced DCT scale
(Pillow's ``draft``) and other formats are box-reduced right after decoding; a
:class:`~semstore.ingest.budget.PixelBudget` bounds the pixels decoded at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import IO, NamedTuple

from PIL import Image, ImageOps, UnidentifiedImageError

from semstore.ingest.budget import PixelBudget
from semstore.ingest.exif import EMPTY_EXIF, PhotoExif, read_exif
from semstore.storage.types import DIGEST_HEX_CHARS

__all__ = [
    "ALLOWED_FORMATS",
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "DecodedImage",
    "content_hash",
    "decode_image",
    "decoded_pixels",
    "open_image",
]

#: Pillow formats that :func:`open_image` decodes; anything else is rejected.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

#: Lower-case file suffixes (with the dot) of the allowed formats, for directory scans.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)

# Exceptions Pillow's decoders raise on malformed or truncated data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, struct.error, zlib.error)

# Common non-image or unsupported formats Pillow has no reader for, by leading bytes.
_FOREIGN_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "PDF"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML/SVG"),
    (b"PK\x03\x04", "ZIP"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")

_REASON_MAX_CHARS = 120
_HEADER_BYTES = 32  # enough for every signature check and the PNG/BMP declared sizes

#: Animated images with more frames than this are refused: only the first frame is ever
#: embedded, and a file of thousands of frames is a resource attack rather than a photo.
MAX_FRAMES = 1000


class BadImageError(ValueError):
    """An image could not be decoded safely; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DecodedImage(NamedTuple):
    """A decoded RGB image (possibly shrunk to the caller's ``min_edge``), its full size, and
    the photo facts of its EXIF block (:data:`~semstore.ingest.exif.EMPTY_EXIF` without one)."""

    image: Image.Image
    width: int
    height: int
    exif: PhotoExif = EMPTY_EXIF


def content_hash(data: bytes) -> str:
    """The content hash of raw file bytes, used to deduplicate ingested images.

    The first 128 bits of their SHA-256, as 32 lowercase hex characters (stored as
    16 bytes; see :class:`semstore.storage.types.HexDigest`).
    """
    return hashlib.sha256(data).hexdigest()[:DIGEST_HEX_CHARS]


def open_image(
    source: str | Path | bytes,
    *,
    max_pixels: int,
    min_edge: int | None = None,
    budget: PixelBudget | None = None,
) -> Image.Image:
    """The image of :func:`decode_image`, without its full size."""
    return decode_image(source, max_pixels=max_pixels, min_edge=min_edge, budget=budget).image


def decode_image(
    source: str | Path | bytes,
    *,
    max_pixels: int,
    min_edge: int | None = None,
    budget: PixelBudget | None = None,
) -> DecodedImage:
    """Decode an image file path or raw bytes into a fully loaded RGB image and its full size.

    Only the formats in :data:`ALLOWED_FORMATS` are tried. Animated images give their
    first frame (more than :data:`MAX_FRAMES` frames are refused); the EXIF orientation is applied; transparent pixels are composited on
    white. The returned image holds no file handle.

    ``min_edge`` is the smallest width and height the caller needs: a larger image comes
    back smaller, never below ``min_edge`` on either side (JPEGs are decoded at that scale,
    which saves most of the memory and time). ``budget`` is held for the decoded pixels
    while decoding.

    Raises:
        BadImageError: the file cannot be read, is empty, is not an image, is in a format
            outside the allow-list, declares zero or more than ``max_pixels`` pixels
            (checked before decoding), or is truncated or corrupt.
        ValueError: ``max_pixels`` or ``min_edge`` is not positive.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if min_edge is not None and min_edge < 1:
        raise ValueError(f"min_edge must be positive, got {min_edge}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(source)), max_pixels, min_edge, budget)
    try:
        fp = Path(source).open("rb")
    except OSError as exc:
        raise BadImageError(f"cannot read file {str(source)!r}: {exc.strerror or exc}") from exc
    with fp:
        return _decode(fp, max_pixels, min_edge, budget)


def decoded_pixels(data: bytes, *, max_pixels: int, min_edge: int | None = None) -> int:
    """The pixels :func:`open_image` would decode for ``data``, read from the header only.

    Lets a caller bound a whole request before decoding any of it. Raises
    :class:`BadImageError` like :func:`open_image` for what its header already shows.
    """
    image, _, _ = _open(io.BytesIO(data), max_pixels)
    with image:
        _draft(image, min_edge)
        width, height = image.size
        return width * height


def _open(fp: IO[bytes], max_pixels: int) -> tuple[Image.Image, bytes, int]:
    """The opened (not yet decoded) image, the stream's first bytes and its size, for diagnostics."""
    header = fp.read(_HEADER_BYTES)
    if not header:
        raise BadImageError("empty file")
    stream_size = fp.seek(0, io.SEEK_END)
    fp.seek(0)
    try:
        # Our own size check below is the limit that matters; Pillow's warning would be noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fp, formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise BadImageError(_bomb_reason(str(exc), header, max_pixels)) from exc
    except UnidentifiedImageError as exc:
        raise BadImageError(_unidentified_reason(header)) from exc
    except _DECODE_ERRORS as exc:
        raise BadImageError(_decode_error_reason(exc, header, stream_size)) from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise BadImageError("zero-size image")
    if width * height > max_pixels:
        image.close()
        raise BadImageError(_too_large(width, height, max_pixels))
    return image, header, stream_size


def _draft(image: Image.Image, min_edge: int | None) -> None:
    """Let a JPEG decode at the smallest DCT scale (1/2, 1/4, 1/8) keeping ``min_edge``."""
    if min_edge is not None and image.format == "JPEG":
        try:
            image.draft(None, (min_edge, min_edge))
        except _DECODE_ERRORS:
            pass  # an odd JPEG just decodes at full size


def _decode(fp: IO[bytes], max_pixels: int, min_edge: int | None, budget: PixelBudget | None) -> DecodedImage:
    image, header, stream_size = _open(fp, max_pixels)
    with image:
        _check_frames(image)
        exif = read_exif(image)  # (from the header: before the pixels are decoded)
        full_width, full_height = image.size
        _draft(image, min_edge)
        width, height = image.size
        reservation = budget.reserve(width * height) if budget is not None else contextlib.nullcontext()
        with reservation:
            try:
                image.load()  # the current (first) frame only; later frames are never decoded
            except Image.DecompressionBombError as exc:
                raise BadImageError(_bomb_reason(str(exc), header, max_pixels)) from exc
            except _DECODE_ERRORS as exc:
                raise BadImageError(_decode_error_reason(exc, header, stream_size)) from exc
            loaded = _reduce(image, min_edge)
            before = loaded.size
            _apply_exif_orientation(loaded)
            if loaded.size != before and loaded.size == before[::-1]:
                full_width, full_height = full_height, full_width  # rotated by its EXIF orientation
            return DecodedImage(_to_rgb(loaded), full_width, full_height, exif)


def _reduce(image: Image.Image, min_edge: int | None) -> Image.Image:
    """Box-reduce a decoded image by the largest integer factor keeping ``min_edge``."""
    if min_edge is None:
        return image
    factor = min(image.size) // min_edge
    if factor < 2:
        return image
    try:
        reduced = image.reduce(factor)
    except (ValueError, OSError):
        return image  # modes reduce() does not take (palette images) stay full size
    reduced.info = image.info  # keep EXIF orientation and transparency
    return reduced


def _check_frames(image: Image.Image) -> None:
    """Refuse animations of more than :data:`MAX_FRAMES` frames (counted without decoding pixels)."""
    if not getattr(image, "is_animated", False):
        return
    try:
        frames = image.n_frames
        image.seek(0)
    except _DECODE_ERRORS as exc:
        raise BadImageError(f"corrupt animation: {exc}") from exc
    if frames > MAX_FRAMES:
        raise BadImageError(f"animated image with {frames} frames (at most {MAX_FRAMES} are accepted)")


def _apply_exif_orientation(image: Image.Image) -> None:
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except _DECODE_ERRORS:
        pass  # malformed EXIF only loses the orientation, the pixels are fine


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    if image.mode.startswith("I;16"):
        # 16-bit samples: scale to 8 bits instead of letting convert() saturate at 255.
        image = image.convert("I").point(lambda v: v / 256).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _too_large(width: int, height: int, max_pixels: int) -> str:
    return f"image too large: {width}x{height} pixels exceeds the limit of {max_pixels}"


def _bomb_reason(message: str, header: bytes, max_pixels: int) -> str:
    size = _declared_size(header)
    if size is not None:
        return _too_large(*size, max_pixels)
    match = re.search(r"\((\d+) pixels\)", message)
    if match is None:
        return "image too large: decompression bomb"
    return f"image too large: {match.group(1)} pixels exceeds the limit of {max_pixels}"


def _declared_size(header: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG or BMP header, read by hand for diagnostics only.

    Pillow refuses zero-size images and huge ones before handing back their size, so this
    is the only way to say which of the two a rejected header was.
    """
    if header.startswith(b"\x89PNG\r\n\x1a\n") and header[12:16] == b"IHDR" and len(header) >= 24:
        width, height = struct.unpack(">II", header[16:24])
        return width, height
    if header.startswith(b"BM") and len(header) >= 26:
        (info_size,) = struct.unpack("<I", header[14:18])
        if info_size == 12:
            width, height = struct.unpack("<HH", header[18:22])
        else:
            width, height = struct.unpack("<ii", header[18:26])
        return abs(width), abs(height)  # negative height means top-down rows
    return None


def _unidentified_reason(header: bytes) -> str:
    known = _sniff_pillow_format(header[:16])
    if known in ALLOWED_FORMATS:
        size = _declared_size(header)
        if size is not None and min(size) == 0:
            return "zero-size image"
        # The signature matched an allowed format, but its header would not parse.
        return f"truncated or corrupt {known} header"
    if known is not None:
        return f"unsupported format: {known}"
    for magic, name in _FOREIGN_MAGIC:
        if header.lstrip().startswith(magic):
            return f"unsupported format: {name}"
    if header[4:8] == b"ftyp" and header[8:12] in _HEIF_BRANDS:
        return f"unsupported format: {header[8:12].decode('ascii').upper()}"
    return "not an image"


def _sniff_pillow_format(prefix: bytes) -> str | None:
    """The Pillow format whose signature check accepts ``prefix``, without opening anything."""
    Image.init()
    for name in list(Image.ID):
        _factory, accept = Image.OPEN[name]
        if accept is None:
            continue  # formats without a signature would claim any bytes
        try:
            result = accept(prefix)
        except Exception:  # noqa: BLE001 - a plugin's signature check must not break the diagnosis
            continue
        if result and not isinstance(result, str):
            return name
    return None


def _decode_error_reason(exc: BaseException, header: bytes, stream_size: int) -> str:
    message = str(exc)
    lowered = message.lower()
    if isinstance(exc, EOFError) or any(
        hint in lowered for hint in ("truncated", "premature end", "incomplete", "unexpected end", "not enough data")
    ):
        return "truncated image"
    if header.startswith(b"RIFF") and header[8:12] == b"WEBP":
        # libwebp only says "could not create decoder object"; the RIFF length tells truncation apart.
        (riff_size,) = struct.unpack("<I", header[4:8])
        if riff_size + 8 > stream_size:
            return "truncated image"
    detail = message or type(exc).__name__
    if len(detail) > _REASON_MAX_CHARS:
        detail = detail[: _REASON_MAX_CHARS - 3] + "..."
    return f"corrupt image: {detail}"
