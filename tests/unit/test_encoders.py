"""Tests of the encoders, through the real open_clip code path with the tiny test model."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from semstore.config import Settings
from semstore.encoders import (
    TINY_TEST_MODEL,
    Encoder,
    EncoderError,
    EncoderWeightsNotFoundError,
    OpenClipEncoder,
    load_encoder,
)

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

REPO_ROOT = Path(__file__).resolve().parents[2]


def _drawn_images(n: int) -> list[Image.Image]:
    images = []
    for i in range(n):
        size = (40 + 7 * i, 30 + 5 * i)  # different sizes: the preprocess must cope
        image = Image.new("RGB", size, (30 * i % 256, 90, 200 - 20 * i))
        draw = ImageDraw.Draw(image)
        draw.ellipse((4, 4, size[0] - 4, size[1] - 4), fill=(250 - 40 * i, 20 * i, 60))
        draw.line((0, size[1], size[0], 0), fill=(255, 255, 255), width=2 + i)
        images.append(image)
    return images


TEXTS = ["a photo of a dog", "a red circle", "", "an extremely long caption " * 40, "ünïcødé text"]


@pytest.fixture(scope="module")
def tiny() -> OpenClipEncoder:
    return OpenClipEncoder(TINY_TEST_MODEL, None)


@pytest.fixture()
def offline_empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HUB_OFFLINE=1 and an empty hub cache, so a tag lookup fails at once."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf-hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads its environment once at import; mirror it into the loaded module.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache


def _assert_unit_float32(x: np.ndarray, n: int, dim: int) -> None:
    assert x.dtype == np.float32
    assert x.shape == (n, dim)
    assert x.flags["C_CONTIGUOUS"]
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_tiny_model_is_an_encoder_and_not_semantic(tiny: OpenClipEncoder) -> None:
    assert isinstance(tiny, Encoder)
    assert tiny.is_semantic is False
    assert tiny.dim == 64
    assert tiny.name == f"{TINY_TEST_MODEL}/random"
    assert TINY_TEST_MODEL in open_clip.list_models()


def test_tiny_model_encodes_images(tiny: OpenClipEncoder) -> None:
    images = _drawn_images(5)
    x = tiny.encode_images(images)
    _assert_unit_float32(x, 5, tiny.dim)
    # Different images must not collapse onto one vector.
    assert np.linalg.matrix_rank(x, tol=1e-4) == 5


def test_tiny_model_encodes_texts(tiny: OpenClipEncoder) -> None:
    t = tiny.encode_texts(TEXTS)
    _assert_unit_float32(t, len(TEXTS), tiny.dim)
    assert not np.allclose(t[0], t[1])


def test_empty_inputs_give_empty_arrays(tiny: OpenClipEncoder) -> None:
    for x in (tiny.encode_images([]), tiny.encode_texts([])):
        assert x.shape == (0, tiny.dim)
        assert x.dtype == np.float32


def test_a_bare_string_is_refused(tiny: OpenClipEncoder) -> None:
    with pytest.raises(TypeError):
        tiny.encode_texts("a dog")


def test_random_weights_are_deterministic_and_leave_global_rng_alone(tiny: OpenClipEncoder) -> None:
    images = _drawn_images(3)
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    other = OpenClipEncoder(TINY_TEST_MODEL, None)
    assert torch.equal(before, torch.random.get_rng_state())
    np.testing.assert_array_equal(other.encode_images(images), tiny.encode_images(images))
    np.testing.assert_array_equal(other.encode_texts(TEXTS), tiny.encode_texts(TEXTS))


def test_batch_size_does_not_change_embeddings(tiny: OpenClipEncoder) -> None:
    images = _drawn_images(5)
    small_batches = OpenClipEncoder(TINY_TEST_MODEL, None, batch_size=2)
    one_batch = OpenClipEncoder(TINY_TEST_MODEL, None, batch_size=5)
    np.testing.assert_allclose(small_batches.encode_images(images), one_batch.encode_images(images), atol=1e-5)
    np.testing.assert_allclose(small_batches.encode_texts(TEXTS), one_batch.encode_texts(TEXTS), atol=1e-5)


def test_local_checkpoint_round_trip(tiny: OpenClipEncoder, tmp_path: Path) -> None:
    images = _drawn_images(3)
    # Perturbed weights, so a checkpoint that silently failed to load would show.
    generator = torch.Generator().manual_seed(7)
    state = {
        key: value + 0.05 * torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
        for key, value in tiny.torch_model.state_dict().items()
    }
    perturbed = tmp_path / "tiny-perturbed.bin"
    torch.save(state, perturbed)
    unchanged = tmp_path / "tiny.bin"
    torch.save(tiny.torch_model.state_dict(), unchanged)

    by_keyword = OpenClipEncoder(TINY_TEST_MODEL, None, checkpoint_path=perturbed)
    by_pretrained = OpenClipEncoder(TINY_TEST_MODEL, str(perturbed))
    assert by_keyword.name == f"{TINY_TEST_MODEL}/tiny-perturbed.bin"
    assert by_keyword.is_semantic is False  # real weights or not, the tiny model means nothing
    loaded = by_keyword.encode_images(images)
    _assert_unit_float32(loaded, 3, tiny.dim)
    np.testing.assert_array_equal(loaded, by_pretrained.encode_images(images))
    assert not np.allclose(loaded, tiny.encode_images(images), atol=1e-3)

    round_trip = OpenClipEncoder(TINY_TEST_MODEL, None, checkpoint_path=unchanged)
    np.testing.assert_array_equal(round_trip.encode_images(images), tiny.encode_images(images))
    np.testing.assert_array_equal(round_trip.encode_texts(TEXTS), tiny.encode_texts(TEXTS))


def test_missing_checkpoint_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    with pytest.raises(EncoderWeightsNotFoundError, match="checkpoint file not found"):
        OpenClipEncoder(TINY_TEST_MODEL, None, checkpoint_path=missing)
    with pytest.raises(EncoderWeightsNotFoundError, match="SEMSTORE_PRETRAINED"):
        OpenClipEncoder("ViT-B-32", str(missing))


def test_checkpoint_that_does_not_fit_the_model(tmp_path: Path) -> None:
    wrong_keys = tmp_path / "wrong.bin"
    torch.save({"not_a_clip_weight": torch.zeros(3)}, wrong_keys)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch checkpoint")
    for path in (wrong_keys, garbage):
        with pytest.raises(EncoderError, match="could not be loaded") as caught:
            OpenClipEncoder(TINY_TEST_MODEL, None, checkpoint_path=path)
        assert not isinstance(caught.value, EncoderWeightsNotFoundError)


def test_weights_not_found_offline_says_how_to_provide_them(offline_empty_hf_cache: Path) -> None:
    with pytest.raises(EncoderWeightsNotFoundError) as caught:
        OpenClipEncoder("ViT-B-32", "laion2b_s34b_b79k")
    message = str(caught.value)
    assert "ViT-B-32" in message and "laion2b_s34b_b79k" in message
    assert str(offline_empty_hf_cache) in message
    assert "HF_HUB_OFFLINE=1" in message
    assert "SEMSTORE_PRETRAINED=/path/to/checkpoint.bin" in message
    assert "--pretrained PATH" in message
    assert TINY_TEST_MODEL in message
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in message


def test_load_encoder_reports_missing_weights_too(offline_empty_hf_cache: Path) -> None:
    with pytest.raises(EncoderWeightsNotFoundError):
        load_encoder(Settings(model="ViT-B-32", pretrained="laion2b_s34b_b79k"))


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="list_models") as caught:
        OpenClipEncoder("ViT-B-33", None)
    assert "ViT-B-32" in str(caught.value)  # a close match is suggested
    assert not isinstance(caught.value, EncoderWeightsNotFoundError)


def test_unknown_pretrained_tag_lists_known_tags() -> None:
    with pytest.raises(ValueError, match="laion2b_s34b_b79k"):
        OpenClipEncoder("ViT-B-32", "no_such_tag")


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"threads": 0}])
def test_invalid_settings_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        OpenClipEncoder(TINY_TEST_MODEL, None, **kwargs)


def test_load_encoder_builds_the_tiny_model_from_settings(tiny: OpenClipEncoder) -> None:
    # The default pretrained tag belongs to ViT-B-32; the tiny model has none and ignores it.
    settings = Settings(model=TINY_TEST_MODEL, batch_size=2, device="cpu")
    encoder = load_encoder(settings)
    assert isinstance(encoder, OpenClipEncoder)
    assert encoder.batch_size == 2
    assert encoder.name == tiny.name
    images = _drawn_images(3)
    np.testing.assert_allclose(encoder.encode_images(images), tiny.encode_images(images), atol=1e-5)


def test_importing_encoders_does_not_import_torch() -> None:
    code = "import sys, semstore.encoders; sys.exit(int('torch' in sys.modules or 'open_clip' in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_random_weights_warn_once_from_semstore_and_never_for_the_tiny_model(caplog: pytest.LogCaptureFixture) -> None:
    # issue #19, item 8: open_clip's root-logger warning on every tiny-model command is noise
    from semstore.encoders import TINY_TEST_MODEL, OpenClipEncoder

    with caplog.at_level(logging.WARNING):
        OpenClipEncoder(TINY_TEST_MODEL, None)
    assert not [r for r in caplog.records if "No pretrained weights" in r.getMessage()], caplog.text
    assert not [r for r in caplog.records if "random weights" in r.getMessage()], caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        OpenClipEncoder("RN50", None)  # a real architecture with random weights (slow-ish: ~1 s)
    said = [r for r in caplog.records if "random weights" in r.getMessage() or "No pretrained" in r.getMessage()]
    assert [r.name for r in said] == ["semstore.encoders.openclip"], caplog.text
    assert logging.getLogger().filters == []  # the filter is removed again
