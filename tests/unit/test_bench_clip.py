"""bench/embed_clip.py -> .npz -> bench.datasets.load_npz_embeddings, with the tiny random-weight CLIP."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not installed

from bench import embed_clip  # noqa: E402
from bench.datasets import DatasetError, load_npz_embeddings  # noqa: E402
from semstore.encoders import TINY_TEST_MODEL, OpenClipEncoder  # noqa: E402

CLASSES = ("cat", "dog", "truck")
N_IMAGES = 40
COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "truck": (40, 40, 200)}


def _write_dataset(folder: Path, n: int = N_IMAGES) -> list[dict[str, str]]:
    """``n`` small PNGs (class colour + per-image noise) and their captions.csv; returns the rows."""
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        pixels = np.clip(np.array(COLOURS[label]) + rng.normal(0, 40, (24, 24, 3)), 0, 255).astype(np.uint8)
        name = f"img/{i:03d}.png"
        Image.fromarray(pixels).save(folder / name)
        rows.append({"file": name, "caption": f"photo number {i} of a {label}", "label": label})
    _write_csv(folder / "captions.csv", rows)
    return rows


def _write_csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = ("file", "caption", "label")) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _embed_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return ["--images", str(folder), "--out", str(out), "--model", TINY_TEST_MODEL,
            "--batch-size", "16", "--no-progress", *extra]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]], Path]:
    """(data folder, CSV rows, .npz path) after one run of embed_clip.main."""
    folder = tmp_path_factory.mktemp("clipdata")
    rows = _write_dataset(folder)
    out = folder / "out" / "tiny-clip"  # no suffix: the file must be written at exactly this path
    assert embed_clip.main(_embed_args(folder, out)) == 0
    return folder, rows, out


def test_npz_has_the_documented_arrays(embedded: tuple[Path, list[dict[str, str]], Path]) -> None:
    folder, rows, out = embedded
    with np.load(out, allow_pickle=False) as npz:
        data = {key: npz[key] for key in npz.files}
    dim = 64  # the tiny test model's width
    assert data["images"].shape == data["captions"].shape == (N_IMAGES, dim)
    assert data["class_prompts"].shape == (len(CLASSES), dim)
    for key in ("images", "captions", "class_prompts"):
        assert data[key].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(data[key], axis=1), 1.0, atol=1e-5)
    assert data["class_names"].tolist() == sorted(CLASSES)
    assert data["labels"].dtype == np.int64
    assert data["labels"].tolist() == [sorted(CLASSES).index(r["label"]) for r in rows]
    meta = json.loads(str(data["meta"]))
    assert meta["model"] == TINY_TEST_MODEL and meta["pretrained"] is None
    assert meta["is_semantic"] is False
    assert (meta["n"], meta["dim"], meta["classes"]) == (N_IMAGES, dim, len(CLASSES))
    assert meta["skipped"] == []


def test_npz_rows_follow_the_csv_order(embedded: tuple[Path, list[dict[str, str]], Path]) -> None:
    folder, rows, out = embedded
    encoder = OpenClipEncoder(TINY_TEST_MODEL, None)
    picks = [0, 17, N_IMAGES - 1]  # first, middle of the second batch, last of the short last batch
    with np.load(out, allow_pickle=False) as npz:
        images, captions, prompts = npz["images"], npz["captions"], npz["class_prompts"]
    expected_images = encoder.encode_images([Image.open(folder / rows[i]["file"]).convert("RGB") for i in picks])
    expected_captions = encoder.encode_texts([rows[i]["caption"] for i in picks])
    np.testing.assert_allclose(images[picks], expected_images, atol=1e-5)
    np.testing.assert_allclose(captions[picks], expected_captions, atol=1e-5)
    np.testing.assert_allclose(prompts, encoder.encode_texts([f"a photo of a {c}" for c in sorted(CLASSES)]),
                               atol=1e-5)


def test_load_npz_embeddings_splits_like_the_minilm_loader(embedded: tuple[Path, list[dict[str, str]], Path]) -> None:
    _, _, out = embedded
    data = load_npz_embeddings(out, 25, 10, seed=3)
    with np.load(out, allow_pickle=False) as npz:
        images, captions, labels = npz["images"], npz["captions"], npz["labels"]
    order = np.random.default_rng(3).permutation(N_IMAGES)
    train_idx, test_idx = order[:25], order[25:35]
    np.testing.assert_array_equal(data.train, images[train_idx])
    np.testing.assert_array_equal(data.test, images[test_idx])
    np.testing.assert_array_equal(data.test_queries, captions[test_idx])
    np.testing.assert_array_equal(data.test_labels, labels[test_idx])
    assert data.dim == 64 and data.class_prompts.shape == (3, 64)
    assert data.class_names == sorted(CLASSES)
    assert data.test_labels.min() >= 0 and data.test_labels.max() < len(CLASSES)
    assert "NOT SEMANTIC" in data.description
    assert data.facts["items"] == N_IMAGES and data.facts["model"] == TINY_TEST_MODEL
    with pytest.raises(DatasetError, match="asked for 30\\+11 items"):
        load_npz_embeddings(out, 30, 11)


def test_codec_quality_reads_the_npz(embedded: tuple[Path, list[dict[str, str]], Path]) -> None:
    from bench.codec_quality import load_data, parse_args

    _, _, out = embedded
    data = load_data(parse_args(["--dataset", "npz", "--embeddings", str(out), "--train", "25", "--test", "10"]), "npz")
    np.testing.assert_array_equal(data.test, load_npz_embeddings(out, 25, 10, seed=0).test)
    with pytest.raises(SystemExit, match="needs --embeddings"):
        load_data(parse_args(["--dataset", "npz", "--train", "25", "--test", "10"]), "npz")
    with pytest.raises(SystemExit, match="asked for 40\\+10 items"):
        load_data(parse_args(["--dataset", "npz", "--embeddings", str(out), "--train", "40", "--test", "10"]), "npz")


def test_missing_column_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _write_dataset(tmp_path, n=3)
    _write_csv(tmp_path / "captions.csv", rows, columns=("file", "caption"))
    assert embed_clip.main(_embed_args(tmp_path, tmp_path / "x.npz")) == 2
    err = capsys.readouterr().err
    assert "missing column(s) label" in err and "Traceback" not in err
    assert not (tmp_path / "x.npz").exists()


def test_missing_image_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_dataset(tmp_path, n=3)
    (tmp_path / "img" / "001.png").unlink()
    assert embed_clip.main(_embed_args(tmp_path, tmp_path / "x.npz")) == 2
    err = capsys.readouterr().err
    assert "1 image file(s)" in err and "001.png" in err


def test_repeated_file_and_empty_caption_are_refused(tmp_path: Path) -> None:
    rows = _write_dataset(tmp_path, n=3)
    _write_csv(tmp_path / "captions.csv", [*rows, rows[0]])
    with pytest.raises(embed_clip.EmbedError, match="repeated"):
        embed_clip.read_captions(tmp_path / "captions.csv", tmp_path)
    _write_csv(tmp_path / "captions.csv", [rows[0], {**rows[1], "caption": " "}])
    with pytest.raises(embed_clip.EmbedError, match="line 3: empty caption"):
        embed_clip.read_captions(tmp_path / "captions.csv", tmp_path)


def test_corrupt_image_stops_or_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_dataset(tmp_path, n=4)
    (tmp_path / "img" / "002.png").write_bytes(b"not a png")
    out = tmp_path / "x.npz"
    assert embed_clip.main(_embed_args(tmp_path, out)) == 2
    assert "002.png" in capsys.readouterr().err and not out.exists()
    assert embed_clip.main(_embed_args(tmp_path, out, "--skip-bad-images")) == 0
    with np.load(out, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        assert npz["images"].shape[0] == npz["captions"].shape[0] == npz["labels"].shape[0] == 3
        # row 2 (a truck) is gone, so the later rows keep their own labels: cat, dog, cat
        assert npz["labels"].tolist() == [0, 1, 0]
    assert meta["n"] == 3 and len(meta["skipped"]) == 1 and "002.png" in meta["skipped"][0]


def _valid_arrays(n: int = 12, dim: int = 8, classes: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)

    def unit(rows: int) -> np.ndarray:
        x = rng.standard_normal((rows, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return {
        "images": unit(n),
        "captions": unit(n),
        "labels": np.arange(n) % classes,
        "class_names": np.array([f"c{i}" for i in range(classes)]),
        "class_prompts": unit(classes),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("captions"), "missing array\\(s\\) captions"),
        (lambda a: a.update(captions=a["captions"][:, :4]), "'captions' has shape"),
        (lambda a: a.update(class_prompts=a["class_prompts"][:2]), "'class_prompts' has shape"),
        (lambda a: a.update(labels=a["labels"] + 1), "labels range 1..3 but there are 3"),
        (lambda a: a.update(labels=a["labels"].astype(np.float32)), "'labels' must be"),
        (lambda a: a["images"].__setitem__((0, 0), np.nan), "'images' has 1 NaN"),
        (lambda a: a.update(images=a["images"] * 2), "'images' rows are not L2-normalised"),
    ],
)
def test_load_npz_embeddings_rejects_bad_files(tmp_path: Path, change, message: str) -> None:
    arrays = _valid_arrays()
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=message):
        load_npz_embeddings(path, 6, 4)


def test_load_npz_embeddings_accepts_a_valid_hand_made_file(tmp_path: Path) -> None:
    # The control case of the rejections above: the same arrays, unchanged, load.
    path = tmp_path / "good.npz"
    np.savez(path, **_valid_arrays())
    data = load_npz_embeddings(path, 6, 4)
    assert data.train.shape == (6, 8) and data.test_queries.shape == (4, 8)
    assert "UNRECORDED ORIGIN" in data.description


def test_load_npz_embeddings_rejects_a_missing_or_non_npz_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_npz_embeddings(tmp_path / "none.npz", 1, 1)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DatasetError, match="cannot be read"):
        load_npz_embeddings(tmp_path / "text.npz", 1, 1)
