"""The first ingest of a new collection: its codec-sample phase, interruption and resume (issue #19, item 3).

A new collection stores nothing until its codec is trained on the first ``codec_bootstrap_size``
images; a Ctrl-C in that phase must say what it lost, keep whatever was committed, and a
re-run must resume. The interruption is a real KeyboardInterrupt raised from inside the real
tiny open_clip encoder's ``encode_images``, as a Ctrl-C during a CLIP batch would be.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import semstore
from semstore.cli import app
from semstore.encoders import OpenClipEncoder
from semstore.ingest.pipeline import IngestInterrupted
from tests.integration.test_end_to_end import draw_images, tiny_settings

IMAGES = 12
SAMPLE = 6
BATCH = 2


class InterruptAfter:
    """Wraps a real encoder; its ``encode_images`` raises KeyboardInterrupt on call ``calls + 1``."""

    def __init__(self, encoder: object, calls: int) -> None:
        self._encoder = encoder
        self.calls_left = calls

    def encode_images(self, images: list) -> object:
        if self.calls_left == 0:
            raise KeyboardInterrupt
        self.calls_left -= 1
        return self._encoder.encode_images(images)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._encoder, name)


def _connect(db_url: str, tmp_path: Path, calls_before_interrupt: int | None) -> semstore.Database:
    settings = tiny_settings(tmp_path, batch_size=BATCH, codec_bootstrap_size=SAMPLE)

    def factory(model: str, pretrained: str | None) -> object:
        real = OpenClipEncoder(model, pretrained, batch_size=BATCH)
        return real if calls_before_interrupt is None else InterruptAfter(real, calls_before_interrupt)

    return semstore.connect(db_url, settings=settings, encoder_factory=factory)  # type: ignore[arg-type]


def _stored(db_url: str, tmp_path: Path) -> int:
    with _connect(db_url, tmp_path, None) as db:
        return db.collection("photos").stats().items


def test_interrupted_codec_sample_is_reported_lost_and_a_rerun_resumes(db_url: str, tmp_path: Path) -> None:
    draw_images(tmp_path / "images", IMAGES)
    with _connect(db_url, tmp_path, calls_before_interrupt=2) as db:  # 2 batches of 2 embedded, sample is 6
        photos = db.create_collection("photos")
        with pytest.raises(IngestInterrupted) as stopped:
            photos.add(tmp_path / "images", progress=False)
    assert isinstance(stopped.value, KeyboardInterrupt)  # still a Ctrl-C to any caller
    assert stopped.value.unsaved_sample == 2 * BATCH
    assert stopped.value.report.added == 0
    assert _stored(db_url, tmp_path) == 0
    with _connect(db_url, tmp_path, None) as db:  # the re-run trains the codec and stores everything
        report = db.collection("photos").add(tmp_path / "images", progress=False)
        assert report.codec_trained and report.added == IMAGES


def test_interruption_after_the_codec_keeps_what_was_stored(db_url: str, tmp_path: Path) -> None:
    draw_images(tmp_path / "images", IMAGES)
    # 3 batches fill the sample (codec trained, 6 stored), then 1 more batch, then Ctrl-C
    with _connect(db_url, tmp_path, calls_before_interrupt=SAMPLE // BATCH + 1) as db:
        photos = db.create_collection("photos")
        with pytest.raises(IngestInterrupted) as stopped:
            photos.add(tmp_path / "images", progress=False)
    assert stopped.value.unsaved_sample == 0
    assert stopped.value.report.added == SAMPLE + BATCH
    assert _stored(db_url, tmp_path) == SAMPLE + BATCH
    with _connect(db_url, tmp_path, None) as db:
        report = db.collection("photos").add(tmp_path / "images", progress=False)
    assert (report.added, report.skipped, report.codec_trained) == (IMAGES - SAMPLE - BATCH, SAMPLE + BATCH, False)


def test_the_sample_phase_has_its_own_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    draw_images(tmp_path / "images", IMAGES)
    with _connect(f"sqlite:///{tmp_path / 'bar.db'}", tmp_path, None) as db:
        db.create_collection("photos").add(tmp_path / "images", progress=True)
    err = capsys.readouterr().err
    assert "embedding codec sample" in err
    assert f"{SAMPLE}/{SAMPLE}" in err  # the sample bar counts to the sample size, not the file count


def _cli_env(tmp_path: Path) -> dict[str, str | None]:
    return {
        "SEMSTORE_MODEL": "semstore-tiny-test", "SEMSTORE_PRETRAINED": None, "SEMSTORE_DATA_DIR": str(tmp_path / "data"),
        "SEMSTORE_DATABASE_URL": None, "SEMSTORE_CODEC_NUM_SUBVECTORS": "4", "SEMSTORE_CODEC_CODEBOOK_SIZE": "16",
        "SEMSTORE_CODEC_BOOTSTRAP_SIZE": None, "SEMSTORE_DEBUG": None, "SEMSTORE_BATCH_SIZE": str(BATCH),
    }  # fmt: skip


def test_cli_codec_sample_sets_the_training_size(tmp_path: Path) -> None:
    draw_images(tmp_path / "images", IMAGES)
    args = ["ingest", str(tmp_path / "images"), "--no-progress", "--codec-sample"]
    result = CliRunner().invoke(app, [*args, "4"], env=_cli_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert f"added {IMAGES}," in result.stdout
    assert "of 4 vectors" in result.stdout  # the codec summary: trained on the 4-image sample
    bad = CliRunner().invoke(app, [*args, "1"], env=_cli_env(tmp_path))
    assert bad.exit_code == 2 and "--codec-sample" in bad.output


def test_cli_says_what_an_interruption_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    draw_images(tmp_path / "images", IMAGES)
    monkeypatch.setattr(
        "semstore.database.build_encoder", lambda model, pretrained, **options: InterruptAfter(
            OpenClipEncoder(model, pretrained, **options), 1)
    )  # fmt: skip
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "images"), "--codec-sample", "6", "--no-progress"],
                                env=_cli_env(tmp_path))  # fmt: skip
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert f"{BATCH} image(s) embedded for the codec sample were not stored" in result.stderr
    assert "never written to disk" in result.stderr
    assert "Run the same command again to resume" in result.stderr
