"""The building blocks of issue #20: safe names and paths, private files, upload folders,
text/metadata/filter validation, the model allow-list, the pixel budget and body limits."""

from __future__ import annotations

import io
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from semstore.config import Settings
from semstore.encoders import TINY_TEST_MODEL, ModelNotAllowedError, ModelPolicy
from semstore.files import create_private_file, is_inside, private_folder, read_regular_file, write_atomically
from semstore.ingest.budget import PixelBudget
from semstore.ingest.images import decode_image, decoded_pixels, open_image
from semstore.names import InvalidNameError, UnsafePathError, check_collection_name, child_folder, is_valid_collection_name
from semstore.uploads import UploadStore, clean_file_name, upload_uri
from semstore.conditions import InvalidFilterError, check_filter
from semstore.validation import (
    InvalidMetadataError,
    InvalidTextError,
    check_metadata,
    check_text,
    readable,
)
from server.limits import body_limit

HOSTILE_NAMES = ["..", ".", "", "%2e%2e", "a/b", "../x", "a\\b", "a\x00b", "\ud800", "x" * 10_000, "_x", "-x", "a b", "ä"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_collection_names_are_refused(name: str) -> None:
    assert not is_valid_collection_name(name)
    with pytest.raises(InvalidNameError):
        check_collection_name(name)


@pytest.mark.parametrize("name", ["photos", "a", "A.b-c_d", "2026.archive", "x" * 128])
def test_safe_collection_names_are_accepted(name: str) -> None:
    assert check_collection_name(name) == name


def test_a_name_of_129_characters_is_refused() -> None:
    assert not is_valid_collection_name("x" * 129)


@pytest.mark.parametrize("component", ["..", ".", "", "a/b", "a\\b", "a\x00b", "../../etc"])
def test_child_folder_never_addresses_the_parent_or_outside(tmp_path: Path, component: str) -> None:
    with pytest.raises(UnsafePathError):
        child_folder(tmp_path, component)


def test_child_folder_refuses_a_symlink_that_leaves_the_parent(tmp_path: Path) -> None:
    parent = tmp_path / "data"
    parent.mkdir()
    (parent / "escape").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        child_folder(parent, "escape")
    assert child_folder(parent, "photos") == parent / "photos"


def test_private_folders_and_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        folder = private_folder(tmp_path / "a" / "b")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
        assert create_private_file(folder / "db.sqlite") is True
        assert create_private_file(folder / "db.sqlite") is False
        assert stat.S_IMODE((folder / "db.sqlite").stat().st_mode) == 0o600
        written = write_atomically(folder / "index.bin", b"abc")
        assert written.read_bytes() == b"abc" and stat.S_IMODE(written.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_read_regular_file_refuses_devices_fifos_symlinks_and_big_files(tmp_path: Path) -> None:
    regular = tmp_path / "a.bin"
    regular.write_bytes(b"x" * 100)
    assert read_regular_file(regular, max_bytes=100) == b"x" * 100
    with pytest.raises(OSError, match="larger than"):
        read_regular_file(regular, max_bytes=99)
    with pytest.raises(OSError, match="not a regular file"):
        read_regular_file("/dev/zero", max_bytes=10)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(OSError):
        read_regular_file(fifo)
    assert time.monotonic() - started < 5  # never waits for a writer
    link = tmp_path / "link"
    link.symlink_to(regular)
    with pytest.raises(OSError):
        read_regular_file(link)
    assert is_inside(link, [tmp_path]) and not is_inside("/etc/passwd", [tmp_path])


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("photo.jpg", "photo.jpg"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\cat.png", "cat.png"),
        ("gpj.\u202eexe.jpg", "gpj.exe.jpg"),
        ("a\x00b\x1f.png", "ab.png"),
        ("\ud800x.png", "x.png"),
        ("..", "image"),
        ("", "image"),
        ("e\u0301.png", "\u00e9.png"),
    ],
)
def test_clean_file_name(given: str, expected: str) -> None:
    assert clean_file_name(given) == expected


def test_clean_file_name_is_bounded() -> None:
    assert len(clean_file_name("x" * 10_000 + ".png")) == 200


def test_upload_store_clean_removes_temps_and_orphans_only(tmp_path: Path) -> None:
    store = UploadStore(tmp_path / "uploads")
    kept_uri, orphan_uri = upload_uri("a.png", b"kept"), upload_uri("b.png", b"orphan")
    with store.writing():
        kept, orphan = store.keep([(kept_uri, b"kept"), (orphan_uri, b"orphan")])
    temp = store.folder / ".upload-abc123"
    temp.write_bytes(b"half")
    removed = store.clean(lambda hashes: {kept_uri} & {u for u in [kept_uri] if u.split("/")[2] in hashes})
    assert removed == 2
    assert kept.exists() and not orphan.exists() and not temp.exists()


def test_upload_store_clean_waits_for_no_writer(tmp_path: Path) -> None:
    store = UploadStore(tmp_path / "uploads")
    entered, release = threading.Event(), threading.Event()

    def writer() -> None:
        with store.writing():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    entered.wait(10)
    try:
        assert store.clean(lambda hashes: set()) is None  # busy: a file about to commit is never removed
    finally:
        release.set()
        thread.join()
    assert store.clean(lambda hashes: set()) == 0


def test_upload_store_without_a_folder_touches_nothing(tmp_path: Path) -> None:
    store = UploadStore(None)
    assert store.path_for(upload_uri("a.png", b"x")) is None
    assert store.clean(lambda hashes: set()) == 0
    store.remove_all()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ["\ud800", "a\x00b", "x" * 5000])
def test_check_text_refuses_unstorable_strings(bad: str) -> None:
    with pytest.raises(InvalidTextError):
        check_text(bad, "field", max_chars=4096)


@pytest.mark.parametrize(
    "metadata",
    [
        {"a": "\ud800"},
        {"\udc00": 1},
        {"a": float("nan")},
        {"a": float("inf")},
        {"a": 2**64},
        {"k" * 300: 1},
        {"a": "x" * 5000},
        {"a": "x" * 4000, "b": "x" * 4000, **{f"c{i}": "x" * 4000 for i in range(20)}},
        {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": {"l": {"m": {"n": {"o": {"p": {"q": 1}}}}}}}}}}}}}}}}},
        [1, 2],
    ],
)
def test_check_metadata_refuses_what_cannot_be_stored_or_read_back(metadata: object) -> None:
    with pytest.raises(InvalidMetadataError):
        check_metadata(metadata)


def test_check_metadata_keeps_valid_objects() -> None:
    value = {"camera": "X100", "iso": 200, "f": 2.8, "tags": ["a", "é"], "gps": {"lat": 1.5}, "ok": True, "n": None}
    assert check_metadata(value) == value


def test_check_filter_bounds_keys_and_values() -> None:
    assert check_filter({"a": 1, "b": "x", "c": True, "d": 1.5}) == {"a": 1, "b": "x", "c": True, "d": 1.5}
    with pytest.raises(InvalidFilterError, match="at most 32 keys"):
        check_filter({f"k{i}": i for i in range(30_000)})
    for bad in ({"a": [1]}, {"a": None}, {"a": float("nan")}, {"": 1}, {"a": "\ud800"}, ["a"]):
        with pytest.raises(InvalidFilterError):
            check_filter(bad)


def test_readable_replaces_surrogates_of_legacy_rows() -> None:
    assert readable({"a": ["\ud800x", {"b": "ok"}]}) == {"a": ["\ufffdx", {"b": "ok"}]}


def _policy(**kwargs: object) -> ModelPolicy:
    values: dict[str, object] = {"default_model": "ViT-B-32", "default_pretrained": "laion2b_s34b_b79k"} | kwargs
    return ModelPolicy(**values)  # type: ignore[arg-type]


def test_model_policy_defaults_to_the_configured_model() -> None:
    policy = _policy()
    assert policy.resolve(None, None) == ("ViT-B-32", "laion2b_s34b_b79k")
    with pytest.raises(ModelNotAllowedError, match="ViT-B-32/laion2b_s34b_b79k \\(default\\)"):
        policy.resolve("ViT-L-14", None)
    with pytest.raises(ModelNotAllowedError):
        policy.resolve(TINY_TEST_MODEL, None)  # the test model only when enabled
    with pytest.raises(ModelNotAllowedError):
        policy.resolve("ViT-B-32", "/etc/passwd")  # never a file path


def test_model_policy_allows_listed_models_by_registry_tag_only() -> None:
    policy = _policy(allowed=("ViT-B-16/laion2b_s34b_b88k", "RN50"), allow_test_model=True)
    assert policy.resolve("ViT-B-16", None) == ("ViT-B-16", "laion2b_s34b_b88k")
    assert policy.resolve("RN50", "openai") == ("RN50", "openai")
    assert policy.resolve(TINY_TEST_MODEL, None) == (TINY_TEST_MODEL, None)
    for model, pretrained in (("RN50", None), ("RN50", "/root/x.pt"), ("RN50", "no-such-tag"), ("ViT-B-16", "openai")):
        with pytest.raises(ModelNotAllowedError):
            policy.resolve(model, pretrained)
    policy.check("RN50", "openai")
    with pytest.raises(ModelNotAllowedError):
        policy.check("ViT-L-14", "openai")


def test_model_policy_reads_settings() -> None:
    settings = Settings(model=TINY_TEST_MODEL, pretrained=None, allowed_models=["RN50"], allow_test_model=False)
    policy = ModelPolicy.from_settings(settings)
    assert policy.resolve(None, None) == (TINY_TEST_MODEL, None)
    assert policy.resolve("RN50", "openai") == ("RN50", "openai")


def _jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 220)).save(out, format="JPEG")
    return out.getvalue()


def test_jpegs_decode_at_the_scale_the_model_needs() -> None:
    data = _jpeg(3000, 2000)
    assert decoded_pixels(data, max_pixels=10**8) == 3000 * 2000
    assert decoded_pixels(data, max_pixels=10**8, min_edge=224) == 375 * 250  # DCT scale 1/8
    decoded = decode_image(data, max_pixels=10**8, min_edge=224)
    assert decoded.image.size == (375, 250) and (decoded.width, decoded.height) == (3000, 2000)
    assert min(open_image(data, max_pixels=10**8, min_edge=600).size) >= 600


def test_other_formats_are_reduced_after_decoding_and_keep_their_full_size() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (1000, 800), (1, 2, 3, 128)).save(out, format="PNG")
    decoded = decode_image(out.getvalue(), max_pixels=10**8, min_edge=100)
    assert decoded.image.size == (125, 100) and decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (1000, 800)


def test_a_tiny_file_declaring_a_huge_jpeg_is_bounded_by_the_header() -> None:
    data = _jpeg(9400, 9400)
    assert decoded_pixels(data, max_pixels=10**8, min_edge=224) == 1175 * 1175


def test_pixel_budget_makes_decodes_wait_for_room() -> None:
    budget = PixelBudget(100)
    order: list[str] = []

    def second() -> None:
        with budget.reserve(50):
            order.append("second")

    with budget.reserve(80):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.2)
        order.append("first released")
    waiter.join(5)
    assert order == ["first released", "second"]
    assert budget.in_use == 0
    with budget.reserve(10**6):  # larger than the whole budget: still decodes, alone
        assert budget.in_use == 10**6


def test_pixel_budget_is_held_while_decoding() -> None:
    budget = PixelBudget(10**9)
    decode_image(_jpeg(640, 480), max_pixels=10**8, budget=budget)
    assert budget.in_use == 0


@pytest.mark.parametrize(
    ("method", "path", "setting"),
    [
        ("POST", "/v1/collections/import", "max_import_bytes"),
        ("POST", "/v1/collections/photos/items", "max_upload_bytes"),
        ("POST", "/v1/collections/photos/search/image", "max_upload_bytes"),
        ("POST", "/v1/codecs", "max_upload_bytes"),
        ("POST", "/v1/collections/photos/search", "max_json_bytes"),
        ("PATCH", "/v1/collections/photos/items/3", "max_json_bytes"),
        ("POST", "/v1/collections", "max_json_bytes"),
    ],
)
def test_body_limit_per_route(method: str, path: str, setting: str) -> None:
    settings = Settings(max_import_bytes=3000, max_upload_bytes=2000, max_json_bytes=1000)
    assert body_limit(settings, method, path) == getattr(settings, setting)
