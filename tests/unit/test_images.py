"""Tests of safe image decoding; every input is generated here."""

from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFile

from semstore.ingest.images import IMAGE_EXTENSIONS, BadImageError, content_hash, open_image

LIMIT = 89_478_485


def _drawing(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    image = Image.new("RGB", size, (20, 160, 40))
    draw = ImageDraw.Draw(image)
    draw.ellipse((4, 4, size[0] - 4, size[1] - 4), fill=(210, 30, 90))
    draw.line((0, 0, *size), fill=(0, 0, 255), width=3)
    return image.convert(mode)


def _encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_declaring(width: int, height: int) -> bytes:
    """A hand-written RGB PNG whose header declares ``width`` x ``height`` (with almost no data)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _reason(source: bytes | Path, max_pixels: int = LIMIT) -> str:
    with pytest.raises(BadImageError) as caught:
        open_image(source, max_pixels=max_pixels)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_good_images_load_as_rgb(fmt: str) -> None:
    data = _encoded(_drawing(), fmt)
    image = open_image(data, max_pixels=LIMIT)
    assert image.mode == "RGB"
    assert image.size == (64, 48)
    image.getpixel((32, 24))  # fully loaded: pixels are available without the source


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16"])
def test_other_modes_are_converted_to_rgb(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode == "I;16" else "PNG"
    image = open_image(_encoded(_drawing(mode=mode), fmt), max_pixels=LIMIT)
    assert image.mode == "RGB"
    assert image.size == (64, 48)


def test_transparent_pixels_become_white() -> None:
    data = _encoded(Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG")
    assert open_image(data, max_pixels=LIMIT).getpixel((3, 3)) == (255, 255, 255)


def test_sixteen_bit_samples_are_scaled_not_saturated() -> None:
    data = _encoded(Image.new("I;16", (8, 8), 32768), "PNG")
    red, green, blue = open_image(data, max_pixels=LIMIT).getpixel((0, 0))
    assert red == green == blue == 128


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    data = _encoded(image, "JPEG", exif=exif.tobytes(), quality=95)
    loaded = open_image(data, max_pixels=LIMIT)
    assert loaded.size == (20, 40)
    r, _, b = loaded.getpixel((10, 4))  # the left band is now on top
    assert b > 200 and r < 60


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), (255, 0, 0) if i == 0 else (0, 0, 255)) for i in range(5000)]
    data = _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=20)
    with Image.open(io.BytesIO(data)) as check:
        assert check.n_frames > 1  # Pillow keeps distinct frames; identical ones would be merged
    image = open_image(data, max_pixels=LIMIT)
    assert image.mode == "RGB"
    assert image.getpixel((4, 4)) == (255, 0, 0)


def test_empty_input() -> None:
    assert _reason(b"") == "empty file"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    assert _reason(path) == "empty file"


def test_missing_file_and_directory(tmp_path: Path) -> None:
    # the message names the file (issue #19, item 9): a search --image typo must say which
    assert _reason(tmp_path / "missing.png") == f"cannot read file {str(tmp_path / 'missing.png')!r}: No such file or directory"
    assert _reason(tmp_path).startswith(f"cannot read file {str(tmp_path)!r}: ")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(random.Random(0).randbytes(4096), id="random-bytes"),
        pytest.param(b"hello, this is plain text and not an image at all\n" * 20, id="text"),
        pytest.param(b"\x89PNX" + bytes(200), id="near-miss-signature"),
    ],
)
def test_non_images(data: bytes) -> None:
    assert _reason(data) == "not an image"


def test_pdf_is_an_unsupported_format() -> None:
    data = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<<>>\n%%EOF\n"
    assert _reason(data) == "unsupported format: PDF"


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "JPEG2000"])
def test_images_outside_the_allow_list_are_refused(fmt: str) -> None:
    from PIL import features

    if fmt == "JPEG2000" and not features.check("jpg_2000"):
        pytest.skip("Pillow built without OpenJPEG")
    data = _encoded(_drawing((32, 32)), fmt)
    assert _reason(data) == f"unsupported format: {fmt}"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.9])
def test_truncated_images(fmt: str, fraction: float) -> None:
    data = _encoded(_drawing(), fmt)
    if fmt == "PNG":
        data = data[: data.index(b"IEND") - 8]  # a lost IEND alone leaves the pixels intact
    cut = data[: max(8, int(len(data) * fraction))]
    assert "truncated" in _reason(cut)


def test_truncated_images_are_not_loaded_leniently() -> None:
    data = _encoded(_drawing(), "JPEG")
    with pytest.raises(BadImageError):
        open_image(data[: len(data) // 2], max_pixels=LIMIT)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_decompression_bomb_header_is_refused_before_decoding() -> None:
    max_before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may escape either
        reason = _reason(_png_declaring(50_000, 50_000))
    assert reason == f"image too large: 50000x50000 pixels exceeds the limit of {LIMIT}"
    assert Image.MAX_IMAGE_PIXELS == max_before


def test_image_between_pillow_warning_and_error_limits_is_refused_silently() -> None:
    # 10000 x 10000 is past Pillow's warning threshold but below its error threshold.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reason = _reason(_png_declaring(10_000, 10_000))
    assert reason == f"image too large: 10000x10000 pixels exceeds the limit of {LIMIT}"


def test_max_pixels_is_the_callers_limit() -> None:
    data = _encoded(_drawing((64, 48)), "JPEG")
    assert _reason(data, max_pixels=1000) == "image too large: 64x48 pixels exceeds the limit of 1000"
    assert open_image(data, max_pixels=64 * 48).size == (64, 48)
    with pytest.raises(ValueError):
        open_image(data, max_pixels=0)


@pytest.mark.parametrize("size", [(0, 10), (10, 0), (0, 0)])
def test_zero_size_png(size: tuple[int, int]) -> None:
    assert _reason(_png_declaring(*size)) == "zero-size image"


def test_zero_width_bmp() -> None:
    data = bytearray(_encoded(_drawing((16, 16)), "BMP"))
    struct.pack_into("<i", data, 18, 0)  # BITMAPINFOHEADER width
    assert _reason(bytes(data)) == "zero-size image"


def test_paths_and_bytes_give_the_same_image(tmp_path: Path) -> None:
    data = _encoded(_drawing(), "PNG")
    path = tmp_path / "drawing.png"
    path.write_bytes(data)
    assert open_image(path, max_pixels=LIMIT).tobytes() == open_image(data, max_pixels=LIMIT).tobytes()
    assert open_image(str(path), max_pixels=LIMIT).tobytes() == open_image(data, max_pixels=LIMIT).tobytes()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count file descriptors")
def test_no_file_handles_leak(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), (10 * i, 0, 0)) for i in range(5)]
    good = tmp_path / "anim.gif"
    frames[0].save(good, "GIF", save_all=True, append_images=frames[1:])
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(_encoded(_drawing(), "JPEG")[:300])
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(50_000, 50_000))

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    for _ in range(20):
        open_image(good, max_pixels=LIMIT)
        for bad in (truncated, bomb):
            with pytest.raises(BadImageError):
                open_image(bad, max_pixels=LIMIT)
    assert open_fds() == before


def test_image_extensions() -> None:
    assert {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"} <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)
    assert ".pdf" not in IMAGE_EXTENSIONS


def test_content_hash_is_the_first_128_bits_of_sha256() -> None:
    assert content_hash(b"abc") == "ba7816bf8f01cfea414140de5dae2223"  # SHA-256("abc") = ba7816bf...f20015ad
    assert content_hash(b"abc") == hashlib.sha256(b"abc").hexdigest()[:32]
    assert content_hash(b"abc") != content_hash(b"abd")
    assert len(content_hash(b"")) == 32


def test_animations_with_too_many_frames_are_refused_and_short_ones_give_their_first_frame() -> None:
    import io as _io

    from PIL import Image as _Image

    from semstore.ingest.images import MAX_FRAMES, BadImageError, open_image

    def gif(frames: int) -> bytes:
        images = [_Image.new("P", (16, 16), 0) for _ in range(frames)]
        for index, image in enumerate(images):  # frames must differ, or Pillow merges them
            image.putpixel((index % 16, (index // 16) % 16), 1 + index % 200)
        out = _io.BytesIO()
        images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=10)
        return out.getvalue()

    assert open_image(gif(3), max_pixels=10_000).size == (16, 16)
    with pytest.raises(BadImageError, match=f"{MAX_FRAMES + 1} frames"):
        open_image(gif(MAX_FRAMES + 1), max_pixels=10_000)
