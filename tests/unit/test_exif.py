"""Tests of the photo EXIF reader; every image and EXIF block is generated here."""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import struct
import warnings
from datetime import datetime, timedelta, timezone

import pytest
from PIL import Image
from PIL.ExifTags import GPS, IFD, Base
from PIL.TiffImagePlugin import IFDRational

from semstore.ingest.exif import (
    EMPTY_EXIF,
    MAX_EXIF_TEXT_CHARS,
    PhotoExif,
    read_exif,
    read_exif_bytes,
)

SOI = b"\xff\xd8"


def _dms(degrees: int, minutes: int, seconds_hundredths: int) -> tuple[IFDRational, ...]:
    return IFDRational(degrees, 1), IFDRational(minutes, 1), IFDRational(seconds_hundredths, 100)


def _exif(
    *,
    make: object = "Canon\x00\x00  ",
    model: object = "EOS R5",
    orientation: object = 6,
    taken: object = "2024:05:01 12:34:56",
    offset: object = "+02:00",
    lens: object = "RF 24-70mm F2.8",
    width: object = 8192,
    height: object = 5464,
    latitude: object = _dms(48, 51, 2424),
    latitude_ref: object = "N",
    longitude: object = _dms(2, 21, 792),
    longitude_ref: object = "E",
) -> Image.Exif:
    """A full photo EXIF block; a field given as ``None`` is left out."""
    exif = Image.Exif()
    exif_ifd = exif.get_ifd(IFD.Exif)
    gps_ifd = exif.get_ifd(IFD.GPSInfo)
    for ifd, tag, value in (
        (exif, Base.Make, make),
        (exif, Base.Model, model),
        (exif, Base.Orientation, orientation),
        (exif_ifd, Base.DateTimeOriginal, taken),
        (exif_ifd, Base.OffsetTimeOriginal, offset),
        (exif_ifd, Base.LensModel, lens),
        (exif_ifd, Base.ExifImageWidth, width),
        (exif_ifd, Base.ExifImageHeight, height),
        (gps_ifd, GPS.GPSLatitude, latitude),
        (gps_ifd, GPS.GPSLatitudeRef, latitude_ref),
        (gps_ifd, GPS.GPSLongitude, longitude),
        (gps_ifd, GPS.GPSLongitudeRef, longitude_ref),
    ):
        if value is not None:
            ifd[tag] = value
    return exif


def _jpeg(exif: Image.Exif | None = None, size: tuple[int, int] = (16, 12)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, (200, 40, 90))
    if exif is None:
        image.save(buffer, "JPEG")
    else:
        image.save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def _with_app1(payload: bytes) -> bytes:
    """A JPEG without EXIF with an APP1 segment holding ``payload`` spliced in right after SOI."""
    plain = _jpeg()
    assert plain.startswith(SOI)
    return SOI + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + plain[2:]


def _read_quietly(data: bytes) -> PhotoExif:
    """:func:`read_exif_bytes`, failing the test if any warning escapes it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_exif_bytes(data)


def _in_memory(**tags: object) -> Image.Image:
    """An unsaved image whose EXIF holds values as given (things no file round trip can carry)."""
    image = Image.new("RGB", (4, 4))
    exif = image.getexif()
    for name, value in tags.items():
        if name in ("LensModel", "DateTimeOriginal"):
            exif.get_ifd(IFD.Exif)[Base[name]] = value
        elif name.startswith("GPS"):
            exif.get_ifd(IFD.GPSInfo)[GPS[name]] = value
        else:
            exif[Base[name]] = value
    return image


def test_every_field_round_trips_through_a_jpeg() -> None:
    result = _read_quietly(_jpeg(_exif()))

    assert result.taken_at == datetime(2024, 5, 1, 12, 34, 56, tzinfo=timezone(timedelta(hours=2)))
    assert result.taken_at is not None and result.taken_at.utcoffset() == timedelta(hours=2)
    assert result.camera_make == "Canon"  # NUL and space padding stripped
    assert result.camera_model == "EOS R5"
    assert result.lens == "RF 24-70mm F2.8"
    assert result.gps_latitude == pytest.approx(48 + 51 / 60 + 24.24 / 3600)
    assert result.gps_longitude == pytest.approx(2 + 21 / 60 + 7.92 / 3600)
    assert result.orientation == 6
    assert (result.original_width, result.original_height) == (8192, 5464)
    assert not result.is_empty()


def test_to_dict_holds_only_present_fields_and_iso_dates() -> None:
    result = _read_quietly(_jpeg(_exif(lens=None, latitude=None, longitude=None, height=None)))

    assert result.to_dict() == {
        "taken_at": "2024-05-01T12:34:56+02:00",
        "camera_make": "Canon",
        "camera_model": "EOS R5",
        "orientation": 6,
        "original_width": 8192,
    }
    assert EMPTY_EXIF.to_dict() == {}


def test_read_exif_of_an_opened_image_matches_read_exif_bytes() -> None:
    data = _jpeg(_exif())
    with Image.open(io.BytesIO(data)) as image:
        assert read_exif(image) == read_exif_bytes(data)


def test_the_result_is_frozen() -> None:
    result = read_exif_bytes(_jpeg(_exif()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.camera_make = "Nikon"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("offset", "expected_offset"),
    [
        ("+02:00", timedelta(hours=2)),
        ("-05:30", -timedelta(hours=5, minutes=30)),
        ("+00:00", timedelta(0)),
        (None, None),  # no offset: the camera's local time, naive
        ("   :  ", None),  # blank placeholder
        ("+99:00", None),  # no such time zone
        ("02:00", None),  # no sign
    ],
)
def test_taken_at_is_aware_only_with_a_valid_offset(offset: str | None, expected_offset: timedelta | None) -> None:
    taken = _read_quietly(_jpeg(_exif(offset=offset))).taken_at

    assert taken is not None
    assert taken.replace(tzinfo=None) == datetime(2024, 5, 1, 12, 34, 56)
    assert taken.utcoffset() == expected_offset
    if expected_offset is None:
        assert taken.tzinfo is None


def test_taken_at_falls_back_to_digitized_then_modified() -> None:
    digitized = _exif(taken=None, offset=None)
    digitized.get_ifd(IFD.Exif)[Base.DateTimeDigitized] = "2023:01:02 03:04:05"
    digitized.get_ifd(IFD.Exif)[Base.OffsetTimeDigitized] = "-03:00"
    digitized[Base.DateTime] = "2025:06:07 08:09:10"
    assert _read_quietly(_jpeg(digitized)).taken_at == datetime(
        2023, 1, 2, 3, 4, 5, tzinfo=timezone(-timedelta(hours=3))
    )

    modified = _exif(taken=None, offset=None)
    modified[Base.DateTime] = "2025:06:07 08:09:10"
    modified.get_ifd(IFD.Exif)[Base.OffsetTime] = "+09:00"
    assert _read_quietly(_jpeg(modified)).taken_at == datetime(
        2025, 6, 7, 8, 9, 10, tzinfo=timezone(timedelta(hours=9))
    )


def test_offset_time_stands_in_for_a_missing_offset_time_original() -> None:
    exif = _exif(offset=None)
    exif.get_ifd(IFD.Exif)[Base.OffsetTime] = "+01:00"

    taken = _read_quietly(_jpeg(exif)).taken_at
    assert taken is not None and taken.utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize(
    ("latitude_ref", "longitude_ref", "latitude_sign", "longitude_sign"),
    [("N", "E", 1, 1), ("S", "W", -1, -1), ("S", "E", -1, 1), ("N", "W", 1, -1), ("s", "w", -1, -1)],
)
def test_south_and_west_are_negative(
    latitude_ref: str, longitude_ref: str, latitude_sign: int, longitude_sign: int
) -> None:
    exif = _exif(
        latitude=_dms(33, 52, 0), latitude_ref=latitude_ref, longitude=_dms(151, 12, 3000), longitude_ref=longitude_ref
    )
    result = _read_quietly(_jpeg(exif))

    assert result.gps_latitude == pytest.approx(latitude_sign * (33 + 52 / 60))
    assert result.gps_longitude == pytest.approx(longitude_sign * (151 + 12 / 60 + 30 / 3600))


def test_a_coordinate_without_its_reference_is_taken_as_north_or_east() -> None:
    result = _read_quietly(_jpeg(_exif(latitude_ref=None, longitude_ref=None)))

    assert result.gps_latitude is not None and result.gps_latitude > 48
    assert result.gps_longitude is not None and result.gps_longitude > 2


@pytest.mark.parametrize(
    ("field", "override"),
    [
        ("gps_latitude", {"latitude": (IFDRational(48, 1), IFDRational(51, 0), IFDRational(0, 1))}),
        ("gps_latitude", {"latitude": (IFDRational(0, 0), IFDRational(0, 1), IFDRational(0, 1))}),
        ("gps_longitude", {"longitude": (IFDRational(2, 1), IFDRational(21, 1), IFDRational(792, 0))}),
        ("gps_latitude", {"latitude": _dms(91, 0, 0)}),
        ("gps_longitude", {"longitude": _dms(180, 0, 1)}),
        ("gps_latitude", {"latitude_ref": "X"}),
        ("gps_longitude", {"longitude_ref": "N"}),  # a latitude reference on the longitude
    ],
)
def test_a_bad_coordinate_is_none_and_the_rest_still_reads(field: str, override: dict[str, object]) -> None:
    result = _read_quietly(_jpeg(_exif(**override)))  # type: ignore[arg-type]

    assert getattr(result, field) is None
    other = "gps_longitude" if field == "gps_latitude" else "gps_latitude"
    assert getattr(result, other) is not None
    assert result.camera_make == "Canon"
    assert result.taken_at is not None


def test_the_coordinate_limits_themselves_are_kept() -> None:
    result = _read_quietly(_jpeg(_exif(latitude=_dms(90, 0, 0), latitude_ref="S", longitude=_dms(180, 0, 0))))

    assert result.gps_latitude == -90.0
    assert result.gps_longitude == 180.0


@pytest.mark.parametrize(
    "taken",
    [
        "0000:00:00 00:00:00",
        "    :  :     :  :  ",
        "garbage",
        "2024:13:01 00:00:00",
        "2024:02:30 10:00:00",
        "2024:05:01 25:00:00",
        "2024:05:01 12:34:60",
        "2024:05:01",
        "",
    ],
)
def test_an_invalid_date_is_none_and_the_rest_still_reads(taken: str) -> None:
    result = _read_quietly(_jpeg(_exif(taken=taken)))

    assert result.taken_at is None
    assert result.camera_model == "EOS R5"
    assert result.orientation == 6


@pytest.mark.parametrize("taken", ["0000:00:00 00:00:00", "garbage"])
def test_an_invalid_original_date_falls_back_to_a_valid_later_one(taken: str) -> None:
    exif = _exif(taken=taken, offset=None)
    exif[Base.DateTime] = "2020:02:29 23:59:59"

    assert _read_quietly(_jpeg(exif)).taken_at == datetime(2020, 2, 29, 23, 59, 59)


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_every_valid_orientation_reads(orientation: int) -> None:
    assert _read_quietly(_jpeg(_exif(orientation=orientation))).orientation == orientation


@pytest.mark.parametrize("orientation", [0, 9, 99, 65535])
def test_an_orientation_outside_1_to_8_is_none(orientation: int) -> None:
    result = _read_quietly(_jpeg(_exif(orientation=orientation)))

    assert result.orientation is None
    assert result.camera_make == "Canon"


@pytest.mark.parametrize("width", [0, None])
def test_a_zero_or_missing_original_size_is_none(width: int | None) -> None:
    result = _read_quietly(_jpeg(_exif(width=width)))

    assert result.original_width is None
    assert result.original_height == 5464


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        ("Canon\x00\x00  ", "Canon"),
        ("  NIKON CORPORATION \x00", "NIKON CORPORATION"),
        ("x" * MAX_EXIF_TEXT_CHARS, "x" * MAX_EXIF_TEXT_CHARS),
        ("x" * (MAX_EXIF_TEXT_CHARS + 1), None),
        ("x" * 10_000, None),
        ("   ", None),
        ("\x00\x00\x00\x00", None),
        ("Can\x00on", None),  # a NUL inside, not padding
        ("Café".encode(), "Café"),  # UTF-8 bytes in an ASCII field, as phones write them
        (b"Caf\xe9", "Café"),  # genuinely Latin-1
    ],
)
def test_make_is_cleaned_and_checked(make: object, expected: str | None) -> None:
    result = _read_quietly(_jpeg(_exif(make=make)))

    assert result.camera_make == expected
    assert result.camera_model == "EOS R5"
    assert result.lens == "RF 24-70mm F2.8"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_jpeg(), id="jpeg"),
        pytest.param(b"", id="empty"),
        pytest.param(b"not an image", id="text"),
        pytest.param(b"%PDF-1.7\n", id="pdf"),
        pytest.param(SOI + b"\xff\xe1\x00", id="truncated-jpeg-header"),
    ],
)
def test_no_exif_or_no_image_gives_empty_exif(data: bytes) -> None:
    result = _read_quietly(data)

    assert result == EMPTY_EXIF
    assert result.is_empty()


def test_png_without_exif_gives_empty_exif() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8)).save(buffer, "PNG")

    assert _read_quietly(buffer.getvalue()) is EMPTY_EXIF


def test_png_with_exif_reads_too() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", exif=_exif())

    result = _read_quietly(buffer.getvalue())
    assert result.camera_make == "Canon"
    assert result.gps_latitude is not None and result.gps_latitude > 48


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"Exif\x00\x00garbage!garbage", id="not-tiff"),
        pytest.param(b"Exif\x00\x00II", id="short-header"),
        pytest.param(b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05", id="truncated-ifd"),
        pytest.param(b"Exif\x00\x00MM\x00*\x7f\xff\xff\xff", id="ifd-offset-past-end"),
        pytest.param(b"Exif\x00\x00", id="empty-block"),
        pytest.param(b"Exif\x00\x00" + bytes(range(256)) * 8, id="noise"),
    ],
)
def test_a_broken_exif_segment_gives_empty_exif_without_raising(payload: bytes) -> None:
    data = _with_app1(payload)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's own "Corrupt EXIF data" while opening
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # the JPEG itself is fine; only its EXIF is broken

    assert _read_quietly(data) == EMPTY_EXIF


def test_a_corrupt_block_is_logged_at_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="semstore.ingest.exif"):
        assert _read_quietly(_with_app1(b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05")) == EMPTY_EXIF

    records = [record for record in caplog.records if record.name == "semstore.ingest.exif"]
    assert records and all(record.levelno == logging.DEBUG for record in records)
    assert any("Corrupt EXIF" in record.getMessage() for record in records)


def test_a_truncated_block_keeps_what_precedes_the_cut() -> None:
    block = _exif(make=None, model=None).tobytes()  # IFD0: the orientation inline, then pointers
    tiff = block[6:]
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd0_offset,) = struct.unpack(order + "I", tiff[4:8])
    (entries,) = struct.unpack(order + "H", tiff[ifd0_offset : ifd0_offset + 2])
    cut = 6 + ifd0_offset + 2 + 12 * entries + 4  # IFD0 whole, the Exif and GPS IFDs gone

    result = _read_quietly(_with_app1(block[:cut]))

    assert result.orientation == 6
    assert result.taken_at is None
    assert result.gps_latitude is None


def test_only_the_header_is_read_not_the_pixels() -> None:
    data = _jpeg(_exif(), size=(256, 256))
    scan = data.index(b"\xff\xda")
    truncated = data[: scan + 40]  # the image data is cut off: decoding it would fail
    with Image.open(io.BytesIO(truncated)) as image, pytest.raises(OSError):
        image.load()

    assert _read_quietly(truncated).camera_make == "Canon"


@pytest.mark.parametrize(
    ("tags", "field", "expected"),
    [
        ({"Model": "EOS\ud800"}, "camera_model", None),  # a lone surrogate
        ({"LensModel": b"EF \xff50mm\x00"}, "lens", "EF \ufffd50mm"),  # bytes as UTF-8, errors replaced
        ({"LensModel": 42}, "lens", None),  # not text at all
        ({"Orientation": True}, "orientation", None),
        ({"Orientation": 3.0}, "orientation", None),
        ({"GPSLatitude": (math.nan, 0.0, 0.0)}, "gps_latitude", None),
        ({"GPSLatitude": (45.5, 30.0, 0.0)}, "gps_latitude", 46.0),
        ({"GPSLatitude": (-45.0, 0.0, 0.0)}, "gps_latitude", None),  # the sign belongs in the reference
        ({"GPSLatitude": 12.25, "GPSLatitudeRef": "S"}, "gps_latitude", -12.25),  # degrees alone
        ({"GPSLatitude": ("4", "5", "6", "7")}, "gps_latitude", None),
        ({"GPSLatitude": ("4", "5", "6")}, "gps_latitude", None),  # text, not numbers
        ({"GPSLatitude": (10**400, 0, 0)}, "gps_latitude", None),  # too large for a float
        ({"DateTimeOriginal": b"2024:05:01 12:34:56\x00"}, "taken_at", datetime(2024, 5, 1, 12, 34, 56)),
        ({"DateTimeOriginal": 20240501}, "taken_at", None),
    ],
)
def test_in_memory_values_no_file_can_carry(tags: dict[str, object], field: str, expected: object) -> None:
    image = _in_memory(Make="Leica", **tags)

    result = read_exif(image)

    assert getattr(result, field) == expected
    assert result.camera_make == "Leica"


def test_an_image_whose_exif_parsing_raises_gives_empty_exif() -> None:
    class Broken(Image.Image):
        def getexif(self) -> Image.Exif:
            raise SyntaxError("not a TIFF file")

    assert read_exif(Broken()) is EMPTY_EXIF
