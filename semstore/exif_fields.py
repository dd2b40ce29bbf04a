"""The EXIF fields a search can filter on and show, and their conversions.

Stored in ``item_exif`` (migration 0006) by :mod:`semstore.ingest.exif`'s reader; filtered as
``exif.<field>`` keys of a ``where`` (:mod:`semstore.conditions`); shown as a hit's ``exif``.

Times are the **local wall-clock time** the camera recorded (EXIF ``DateTimeOriginal``), kept
as seconds of that clock since 1970-01-01T00:00:00 with no time zone applied: "taken in May
2024" means May on the photographer's clock, wherever that was. A filter bound is an ISO 8601
date or date-time *without* a time zone (``2024-05-01``, ``2024-05-01T18:30``); the UTC
offset a file gives is kept beside the time and shown, never used to shift it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

#: ``exif.<name>`` filter key -> (``item_exif`` column, kind: "time" / "text" / "number").
FIELDS: dict[str, tuple[str, str]] = {
    "exif.taken_at": ("taken_at", "time"),
    "exif.make": ("camera_make", "text"),
    "exif.model": ("camera_model", "text"),
    "exif.lens": ("lens", "text"),
    "exif.latitude": ("latitude_microdeg", "number"),
    "exif.longitude": ("longitude_microdeg", "number"),
    "exif.orientation": ("orientation", "number"),
    "exif.width": ("original_width", "number"),
    "exif.height": ("original_height", "number"),
}
#: Columns stored as integer multiples of 1 / scale (degrees as millionths: no float column).
SCALES: dict[str, int] = {"latitude_microdeg": 1_000_000, "longitude_microdeg": 1_000_000}
#: The filter key of a photo's GPS position: ``{"$near": [lat, lon, km]}`` or ``{"$box": [south, west, north, east]}``.
LOCATION = "exif.location"
PREFIX = "exif."
#: Mean Earth radius (IUGG), for great-circle distances.
EARTH_RADIUS_KM = 6371.0088
_EPOCH = datetime(1970, 1, 1)


def local_seconds(moment: datetime) -> int:
    """Seconds of ``moment``'s wall clock since 1970-01-01T00:00:00 (any time zone ignored)."""
    return int((moment.replace(tzinfo=None) - _EPOCH).total_seconds())


def parse_local_time(text: str) -> int:
    """:func:`local_seconds` of an ISO 8601 date or date-time without a time zone; raises
    ``ValueError`` with a message saying what is expected."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not an ISO 8601 date or date-time (e.g. 2024-05-01 or 2024-05-01T18:30)") from None
    if moment.tzinfo is not None:
        raise ValueError(f"{text[:40]!r} has a time zone; photo times are the camera's local clock: give it without one")
    return local_seconds(moment)


def display_time(seconds: int, offset_minutes: int | None) -> str:
    """The ISO 8601 text of a stored time (with its UTC offset when known)."""
    moment = _EPOCH + timedelta(seconds=int(seconds))
    if offset_minutes is not None:
        moment = moment.replace(tzinfo=timezone(timedelta(minutes=int(offset_minutes))) if offset_minutes else UTC)
    return moment.isoformat()


def display(row: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an ``item_exif`` row a hit shows (present ones only), by short name."""
    shown: dict[str, Any] = {}
    if row.get("taken_at") is not None:
        shown["taken_at"] = display_time(row["taken_at"], row.get("taken_at_offset_minutes"))
    for key, (column, _) in FIELDS.items():
        if column != "taken_at" and row.get(column) is not None:
            shown[key[len(PREFIX) :]] = row[column] / SCALES[column] if column in SCALES else row[column]
    return shown


def stored_value(column: str, value: Any) -> Any:
    """A filter operand or an EXIF value as the column stores it (degrees as integer millionths)."""
    scale = SCALES.get(column)
    return value if scale is None or value is None else round(float(value) * scale)


def distance_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    """Great-circle (haversine) distance in km; works elementwise on numpy arrays."""
    import numpy as np

    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlat, dlon = p2 - p1, np.radians(lon2) - np.radians(lon1)
    h = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(h, 1.0)))


def bounding_box(lat: float, lon: float, km: float) -> tuple[float, float, list[tuple[float, float]]]:
    """``(south, north, longitude ranges)`` that contain every point within ``km`` of
    (lat, lon): one range, two where the circle crosses the antimeridian, all longitudes
    where it reaches a pole."""
    dlat = math.degrees(km / EARTH_RADIUS_KM)
    south, north = lat - dlat, lat + dlat
    if south <= -90 or north >= 90:
        return max(south, -90.0), min(north, 90.0), [(-180.0, 180.0)]
    dlon = math.degrees(math.asin(min(1.0, math.sin(km / EARTH_RADIUS_KM) / math.cos(math.radians(lat)))))
    west, east = lon - dlon, lon + dlon
    if dlon >= 180:
        return south, north, [(-180.0, 180.0)]
    if west < -180:
        return south, north, [(west + 360, 180.0), (-180.0, east)]
    if east > 180:
        return south, north, [(west, 180.0), (-180.0, east - 360)]
    return south, north, [(west, east)]
