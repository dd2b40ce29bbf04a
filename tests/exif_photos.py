"""Generated JPEGs with real EXIF blocks (Pillow ``Image.Exif``): dates (with and without a UTC
offset), cameras, GPS positions in three places (one beside the antimeridian), some without
EXIF and one whose EXIF block is garbage. Shared by the EXIF tests and the browser test."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

import numpy as np
from PIL import Image
from PIL.ExifTags import GPS, IFD, Base

from tests.e2e.conftest import make_image

CAMERAS = [("Fujifilm", "X100V"), ("Canon", "EOS R5"), ("Apple", "iPhone 15")]
# (lat, lon) clusters: Paris, New York, beside the antimeridian (Fiji / Taveuni)
PLACES = [(48.8566, 2.3522), (40.7128, -74.0060), (-16.8, 179.99)]


@dataclass
class Photo:
    name: str
    data: bytes
    taken: datetime | None
    offset: str | None
    camera: tuple[str, str] | None
    position: tuple[float, float] | None


def _rational(value: float) -> tuple[Fraction, Fraction, Fraction]:
    degrees = int(value)
    minutes_float = (value - degrees) * 60
    minutes = int(minutes_float)
    seconds = Fraction(round((minutes_float - minutes) * 60 * 10_000), 10_000)
    return Fraction(degrees), Fraction(minutes), seconds


def jpeg_with_exif(index: int, *, taken: datetime | None, offset: str | None, camera: tuple[str, str] | None,
          position: tuple[float, float] | None) -> bytes:  # fmt: skip
    exif = Image.Exif()
    if camera:
        exif[Base.Make], exif[Base.Model] = camera
    details = exif.get_ifd(IFD.Exif)
    if taken:
        details[Base.DateTimeOriginal] = taken.strftime("%Y:%m:%d %H:%M:%S")
        if offset:
            details[Base.OffsetTimeOriginal] = offset
    if position:
        lat, lon = position
        gps = exif.get_ifd(IFD.GPSInfo)
        gps[GPS.GPSLatitudeRef], gps[GPS.GPSLatitude] = ("N" if lat >= 0 else "S"), _rational(abs(lat))
        gps[GPS.GPSLongitudeRef], gps[GPS.GPSLongitude] = ("E" if lon >= 0 else "W"), _rational(abs(lon))
    out = io.BytesIO()
    make_image(index, size=40).save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def exif_photos() -> list[Photo]:
    rng = np.random.default_rng(5)
    photos = []
    for i in range(36):
        taken = datetime(2023, 1 + i % 12, 1 + i % 27, 8 + i % 12, i % 60, 0) if i % 9 != 8 else None
        offset = ["+02:00", "-05:00", None][i % 3] if taken else None
        camera = CAMERAS[i % 3] if i % 7 != 6 else None
        if i % 5 == 4:
            position = None
        else:
            lat, lon = PLACES[i % 3]
            lat += float(rng.uniform(-0.2, 0.2))
            lon = ((lon + float(rng.uniform(-0.2, 0.2)) + 180) % 360) - 180
            position = (round(lat, 5), round(lon, 5))
        photos.append(Photo(f"p{i:02d}.jpg", jpeg_with_exif(i, taken=taken, offset=offset, camera=camera, position=position),
                            taken, offset, camera, position))  # fmt: skip
    # broken EXIF: a garbage APP1 "Exif" segment spliced after SOI; the image itself is fine
    plain = io.BytesIO()
    make_image(99, size=40).save(plain, "JPEG", quality=90)
    body = b"Exif\x00\x00" + b"\xde\xad\xbe\xef" * 8
    broken = plain.getvalue()[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + plain.getvalue()[2:]
    photos.append(Photo("broken.jpg", broken, None, None, None, None))
    return photos


