"""Issue #20 through the library, on real SQLite files and PostgreSQL: names stored before
names were checked cannot reach outside their folder, models are refused before they load,
loaded encoders are bounded, and the ingest progress bar shows the final counts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import semstore
from semstore import storage
from semstore.config import Settings
from semstore.encoders import TINY_TEST_MODEL, ModelNotAllowedError, ModelPolicy, OpenClipEncoder
from semstore.names import InvalidNameError
from tests.integration.test_end_to_end import draw_images, tiny_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path, codec_bootstrap_size=64)


def _tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.mark.parametrize("legacy", ["..", ".", "a/b", "../../x"])
def test_deleting_a_legacy_unsafe_name_touches_nothing_outside(
    db_url: str, settings: Settings, tmp_path: Path, legacy: str
) -> None:
    db = semstore.connect(db_url, settings=settings)
    photos = db.create_collection("photos")
    photos.add_images([(p.name, p.read_bytes()) for p in draw_images(tmp_path / "img", 70)])
    with storage.transaction(db.sessions) as session:  # as an older version let it be stored
        storage.create_collection(session, name=legacy, model=TINY_TEST_MODEL, pretrained=None, dim=photos.dim)
    before = _tree(tmp_path)
    with pytest.raises(InvalidNameError):
        db.create_collection(legacy)
    db.delete_collection(legacy)
    assert _tree(tmp_path) == before  # the data directory, database and uploads are intact
    assert [c.name for c in db.collections()] == ["photos"]
    assert photos.stats().items == 70 and len(photos.search(text="a shape", k=3)) == 3
    db.close()


def test_the_sqlite_file_and_data_folders_are_private(settings: Settings, tmp_path: Path) -> None:
    db = semstore.connect(f"sqlite:///{tmp_path / 'data' / 'semstore.db'}", settings=settings)
    photos = db.create_collection("photos")
    photos.add_images([(p.name, p.read_bytes()) for p in draw_images(tmp_path / "img", 70)])
    photos.search(text="x", k=1)
    for path in (tmp_path / "data").rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o700 if path.is_dir() else mode & 0o077 == 0, (path, oct(mode))
    db.close()


def test_models_outside_the_list_are_refused_before_anything_loads(settings: Settings, tmp_path: Path) -> None:
    built: list[tuple[str, str | None]] = []

    def factory(model: str, pretrained: str | None) -> OpenClipEncoder:
        built.append((model, pretrained))
        return OpenClipEncoder(model, pretrained)

    policy = ModelPolicy.from_settings(settings)
    for model, pretrained in (("ViT-L-14", None), ("ViT-B-32", "/etc/passwd"), (TINY_TEST_MODEL, "/root/x.pt")):
        with pytest.raises(ModelNotAllowedError, match="semstore-tiny-test \\(default\\)"):
            policy.resolve(model, pretrained)
    assert built == []
    db = semstore.connect(f"sqlite:///{tmp_path / 'a.db'}", settings=settings, encoder_factory=factory)
    db.create_collection("ok", **dict(zip(("model", "pretrained"), policy.resolve(None, None))))
    assert built == [(TINY_TEST_MODEL, None)]


def test_loaded_encoders_are_bounded_least_recently_used_first(settings: Settings, tmp_path: Path) -> None:
    built: list[str | None] = []

    def factory(model: str, pretrained: str | None) -> OpenClipEncoder:
        built.append(pretrained)
        return OpenClipEncoder(model, pretrained)

    db = semstore.connect(
        f"sqlite:///{tmp_path / 'a.db'}", settings=settings.model_copy(update={"max_loaded_encoders": 2}), encoder_factory=factory
    )
    # The tiny model ignores its weights argument (it has none), so three "weights" are three cache entries.
    first = db.encoder(TINY_TEST_MODEL, "a")
    db.encoder(TINY_TEST_MODEL, "b")
    assert db.encoder(TINY_TEST_MODEL, "a") is first  # a hit moves "a" to the most recent end
    db.encoder(TINY_TEST_MODEL, "c")  # evicts "b", the least recently used
    assert db.loaded_encoders() == [(TINY_TEST_MODEL, "a"), (TINY_TEST_MODEL, "c")]
    db.encoder(TINY_TEST_MODEL, "b")
    assert built == ["a", "b", "c", "b"]


def test_the_progress_bar_ends_with_the_reported_counts(settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = semstore.connect(f"sqlite:///{tmp_path / 'a.db'}", settings=settings)
    images = draw_images(tmp_path / "img", 56)
    report = db.create_collection("photos").add(images, progress=True)
    assert report.added == 56 and report.codec_trained  # fewer than the bootstrap size: stored after training
    bar = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("ingest")]
    assert "added=56" in bar[-1] and "100%" in bar[-1], bar[-3:]
    assert any("awaiting_codec=" in line for line in bar), bar
