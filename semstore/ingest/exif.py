"""Photo EXIF fields of an image (date taken, camera, lens, GPS position, orientation, size), read with Pillow.

EXIF is untrusted data written by many cameras, phones and editors, often wrongly: a
missing, truncated or malformed block, or a field that fails its check, is simply absent
from the result, never an exception. Pillow parses the block; this module only picks and
validates the few fields that describe a photo. Called once per ingested image, it reads
the header only and never decodes pixels.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import numbers
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from PIL import Image
from PIL.ExifTags import GPS, IFD, Base

from semstore.exif_fields import local_seconds, stored_value
from semstore.validation import InvalidTextError, check_text

__all__ = ["EMPTY_EXIF", "MAX_EXIF_TEXT_CHARS", "PhotoExif", "read_exif", "read_exif_bytes"]

_log = logging.getLogger(__name__)

#: Longest camera make, model or lens name kept, in characters; longer ones are dropped.
MAX_EXIF_TEXT_CHARS = 255

# What cameras pad text fields with (str.strip, not a regex: linear on hostile input).
_PADDING = "\x00 \t\n\r\f\v"
_DATE = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
# Each date tag, and the offset tag that says its time zone.
_DATE_TAGS = (
    (Base.DateTimeOriginal, Base.OffsetTimeOriginal),
    (Base.DateTimeDigitized, Base.OffsetTimeDigitized),
    (Base.DateTime, Base.OffsetTime),
)


@dataclass(frozen=True)
class PhotoExif:
    """The photo fields of an image's EXIF; each is ``None`` when absent or invalid."""

    #: When the photo was taken (DateTimeOriginal, else DateTimeDigitized, else DateTime);
    #: time-zone aware when EXIF gives its offset, else naive (the camera's local time).
    taken_at: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    #: Decimal degrees, south negative.
    gps_latitude: float | None = None
    #: Decimal degrees, west negative.
    gps_longitude: float | None = None
    #: The EXIF orientation code, 1 to 8.
    orientation: int | None = None
    #: The size of the original photo as EXIF records it (ExifImageWidth / ExifImageHeight).
    original_width: int | None = None
    original_height: int | None = None

    def is_empty(self) -> bool:
        """Whether every field is ``None``."""
        return all(getattr(self, field.name) is None for field in dataclasses.fields(self))

    def to_dict(self) -> dict[str, object]:
        """The present fields by name, ``taken_at`` as ISO 8601 text (with its offset when known)."""
        present: dict[str, object] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                present[field.name] = value.isoformat() if isinstance(value, datetime) else value
        return present


#: The result for an image without (readable) EXIF.
EMPTY_EXIF = PhotoExif()


def exif_row(exif: PhotoExif) -> dict[str, object] | None:
    """The ``item_exif`` columns of ``exif`` (see :mod:`semstore.exif_fields`); None when empty."""
    if exif.is_empty():
        return None
    taken, offset = exif.taken_at, None
    if taken is not None and taken.utcoffset() is not None:
        offset = int(taken.utcoffset().total_seconds() // 60)  # type: ignore[union-attr]
    return {
        "taken_at": local_seconds(taken) if taken is not None else None,
        "taken_at_offset_minutes": offset,
        "camera_make": exif.camera_make,
        "camera_model": exif.camera_model,
        "lens": exif.lens,
        "latitude_microdeg": stored_value("latitude_microdeg", exif.gps_latitude),
        "longitude_microdeg": stored_value("longitude_microdeg", exif.gps_longitude),
        "orientation": exif.orientation,
        "original_width": exif.original_width,
        "original_height": exif.original_height,
    }


def read_exif(image: Image.Image) -> PhotoExif:
    """The photo EXIF fields of an opened image; :data:`EMPTY_EXIF` when it has none.

    Never raises for bad EXIF: a block Pillow cannot parse gives :data:`EMPTY_EXIF`, and a
    field that is missing or fails its check is ``None`` while the others are still read.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exif = image.getexif()
            ifd0 = dict(exif)
            exif_ifd = exif.get_ifd(IFD.Exif)
            gps_ifd = exif.get_ifd(IFD.GPSInfo)
    except Exception as exc:  # noqa: BLE001 - any parse failure of untrusted EXIF only means "no EXIF"
        _log.debug("unreadable EXIF: %s: %s", type(exc).__name__, exc)
        return EMPTY_EXIF
    for warning in caught:
        _log.debug("EXIF warning: %s", warning.message)
    if not (ifd0 or exif_ifd or gps_ifd):
        return EMPTY_EXIF

    def tag(name: int) -> Any:
        """An Exif-IFD tag, also looked for in IFD0, where some writers put them."""
        value = exif_ifd.get(name)
        return ifd0.get(name) if value is None else value

    return PhotoExif(
        taken_at=_taken_at(tag),
        camera_make=_text(ifd0.get(Base.Make), "Make"),
        camera_model=_text(ifd0.get(Base.Model), "Model"),
        lens=_text(tag(Base.LensModel), "LensModel"),
        gps_latitude=_coordinate(gps_ifd, GPS.GPSLatitude, GPS.GPSLatitudeRef, "N", "S", 90.0),
        gps_longitude=_coordinate(gps_ifd, GPS.GPSLongitude, GPS.GPSLongitudeRef, "E", "W", 180.0),
        orientation=_integer(ifd0.get(Base.Orientation), 1, 8),
        original_width=_integer(tag(Base.ExifImageWidth), 1, None),
        original_height=_integer(tag(Base.ExifImageHeight), 1, None),
    )


def read_exif_bytes(data: bytes) -> PhotoExif:
    """The photo EXIF fields of an encoded image; :data:`EMPTY_EXIF` for anything unreadable.

    Only the header is parsed (no pixels are decoded), and only the formats that ingest
    accepts (:data:`~semstore.ingest.images.ALLOWED_FORMATS`) are tried.
    """
    from semstore.ingest.images import ALLOWED_FORMATS  # (images.py reads EXIF with read_exif: imported here)

    try:
        # Pillow's JPEG reader already parses EXIF (for the resolution) while opening, and
        # warns there about a corrupt block.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Exception as exc:  # noqa: BLE001 - not an image we can open has no EXIF
        _log.debug("no EXIF read, cannot open the image: %s: %s", type(exc).__name__, exc)
        return EMPTY_EXIF
    for warning in caught:
        _log.debug("EXIF warning: %s", warning.message)
    with image:
        return read_exif(image)


def _text(value: object, field: str) -> str | None:
    """``value`` as clean text (padding stripped, bytes as UTF-8), or ``None`` if unusable."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif isinstance(value, str):
        value = _from_latin1(value)
    else:
        return None
    text = value.strip(_PADDING)
    if not text:
        return None
    try:
        return check_text(text, f"EXIF {field}", max_chars=MAX_EXIF_TEXT_CHARS)
    except InvalidTextError as exc:
        _log.debug("EXIF %s dropped: %s", field, exc)
        return None


def _from_latin1(text: str) -> str:
    """Undo Pillow's Latin-1 decoding of an EXIF text field that is really UTF-8 (as phones write)."""
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text  # really Latin-1 (or set in memory as text): keep it


def _taken_at(tag: Any) -> datetime | None:
    for date_tag, offset_tag in _DATE_TAGS:
        text = _text(tag(date_tag), date_tag.name)
        if text is None:
            continue
        match = _DATE.fullmatch(text)
        if match is None:
            _log.debug("EXIF %s is not a date: %r", date_tag.name, text)
            continue
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        try:
            taken = datetime(year, month, day, hour, minute, second)
        except ValueError:
            _log.debug("EXIF %s is not a valid date: %r", date_tag.name, text)
            continue
        zone = _zone(tag(offset_tag))
        if zone is None:
            zone = _zone(tag(Base.OffsetTime))
        return taken if zone is None else taken.replace(tzinfo=zone)
    return None


def _zone(value: object) -> timezone | None:
    """A fixed time zone from an EXIF offset such as ``"+02:00"``, or ``None``."""
    text = _text(value, "OffsetTime")
    match = _OFFSET.fullmatch(text) if text is not None else None
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    if int(hours) > 14 or int(minutes) > 59:
        return None
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-offset if sign == "-" else offset)


def _coordinate(
    gps: Mapping[int, Any], value_tag: int, ref_tag: int, positive: str, negative: str, limit: float
) -> float | None:
    """Decimal degrees from degree/minute/second rationals and their N/S or E/W reference."""
    parts = gps.get(value_tag)
    if parts is None:
        return None
    if not isinstance(parts, tuple):
        parts = (parts,)  # Pillow unwraps a single value: degrees only
    if not 1 <= len(parts) <= 3:
        return None
    if not all(isinstance(part, numbers.Real) and not isinstance(part, bool) for part in parts):
        return None
    try:
        values = [float(part) for part in parts]  # Pillow reads a zero denominator as NaN
    except (ArithmeticError, ValueError):
        return None  # e.g. an integer too large for a float
    if not all(math.isfinite(value) and value >= 0 for value in values):
        return None
    degrees = sum(value / 60**power for power, value in enumerate(values))
    ref = _text(gps.get(ref_tag), "GPS reference")
    if ref is not None:
        ref = ref.upper()
        if ref not in (positive, negative):
            return None
        if ref == negative:
            degrees = -degrees
    return degrees if -limit <= degrees <= limit else None


def _integer(value: object, low: int, high: int | None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if value < low or (high is not None and value > high):
        return None
    return value
