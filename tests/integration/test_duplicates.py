"""Near-duplicate groups from the codes alone (:mod:`semstore.duplicates`, ``semstore duplicates``).

A real collection (SQLite, the tiny test model, 8 x 8-bit codes, the codec trained by the
first ingest) holds distinct originals and, for every other one, a resized, a JPEG
quality-50 and a 5 %-cropped copy. Every copy must land in its original's group and no group
may hold two originals.

The tiny model has random weights: its embeddings are dominated by one common direction, so
its cosine is a coarse pixel-level likeness (mostly overall colour and layout) and unrelated
pictures score far above what they would with CLIP. Measured here: most pairs of
``make_image`` pictures score 0.85-0.99 and only about 20 of 400 varied synthetic pictures
are pairwise below 0.95, while the copies score >= 0.997 with their originals (decoded).
So the default threshold (:data:`~semstore.duplicates.DEFAULT_THRESHOLD`, 0.90, meant for
real CLIP models) puts unrelated originals together with this model, and the acceptance test runs at :data:`TINY_THRESHOLD` on
originals chosen to be pairwise distinct *for this model* (float cosine below
:data:`DISTINCT_BELOW`). At the default threshold the tests check what does hold with this
model (every copy is grouped with its original) and that it is the threshold used by
default (library, CLI). The grouping itself is checked exactly against brute force on
hand-built indexes.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import semstore
import semstore.duplicates as duplicates_module
from semstore.cli import app
from semstore.cli.commands import duplicates as duplicates_command
from semstore.codec import PQVAECodec
from semstore.config import Settings
from semstore.duplicates import (
    DEFAULT_NEIGHBOURS,
    DEFAULT_THRESHOLD,
    DuplicateGroup,
    find_duplicates,
    group_pairs,
    source_uris,
)
from semstore.encoders import TINY_TEST_MODEL
from semstore.index import ADCIndex
from tests.e2e.conftest import encode, make_image

#: Distinct originals in the collection; every other one gets the three copies.
ORIGINALS = 30
#: Candidate pictures the originals are chosen from (``make_image`` seeds, varied sizes).
CANDIDATES = 200
#: Originals are pairwise below this float cosine under the tiny model.
DISTINCT_BELOW = 0.99
#: The threshold that separates copies from distinct originals under the tiny model (see the
#: module docstring: decoded, originals measured <= 0.990 apart, copies >= 0.997).
TINY_THRESHOLD = 0.995
COPY_KINDS = ("resized", "q50", "crop")

runner = CliRunner()


@dataclass
class Photos:
    collection: semstore.Collection
    ids: dict[str, int]  # "o07", "o07-resized", ... -> item id
    url: str
    data_dir: Path

    @property
    def names(self) -> dict[int, str]:
        return {item_id: name for name, item_id in self.ids.items()}

    def originals(self) -> list[str]:
        return sorted(name for name in self.ids if "-" not in name)

    def copies(self) -> list[str]:
        return sorted(name for name in self.ids if "-" in name)


def _jpeg_q50(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=50)
    return out.getvalue()


def _cropped(image: Image.Image) -> Image.Image:
    """5 % of the width and of the height cut off (the right and bottom edges)."""
    return image.crop((0, 0, round(image.width * 0.95), round(image.height * 0.95)))


def _distinct_originals(collection: semstore.Collection) -> list[Image.Image]:
    """The first ORIGINALS candidates whose tiny-model embeddings are pairwise below DISTINCT_BELOW."""
    candidates = [make_image(i, size=72 + 8 * (i % 8)) for i in range(CANDIDATES)]
    embedded = collection.encoder.encode_images(candidates)
    embedded /= np.linalg.norm(embedded, axis=1, keepdims=True)
    kept: list[int] = []
    for i in range(len(candidates)):
        if all(float(embedded[i] @ embedded[j]) < DISTINCT_BELOW for j in kept):
            kept.append(i)
            if len(kept) == ORIGINALS:
                break
    assert len(kept) == ORIGINALS, f"only {len(kept)} of {CANDIDATES} candidates are pairwise distinct"
    return [candidates[i] for i in kept]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Photos:
    root = tmp_path_factory.mktemp("duplicates")
    url = f"sqlite:///{root / 'semstore.db'}"
    settings = Settings(
        data_dir=root / "data", database_url=url, model=TINY_TEST_MODEL, pretrained=None,
        codec_num_subvectors=8, batch_size=32, codec_bootstrap_size=64,
    )  # fmt: skip
    collection = semstore.connect(settings=settings).create_collection("photos")
    originals = _distinct_originals(collection)
    files = [(f"o{n:02d}.png", encode(image, "PNG")) for n, image in enumerate(originals)]
    for n, image in list(enumerate(originals))[::2]:
        resized = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS)
        files.append((f"o{n:02d}-resized.png", encode(resized, "PNG")))
        files.append((f"o{n:02d}-q50.jpg", _jpeg_q50(image)))
        files.append((f"o{n:02d}-crop.png", encode(_cropped(image), "PNG")))
    report = collection.add_images(files)  # the codec is trained on the first 64 of them
    assert report.added == len(files) and not report.failed
    ids = {uri.rsplit("/", 1)[1].split(".")[0]: item_id for uri, item_id in report.added_items}
    return Photos(collection, ids, url, root / "data")


def _group_of(groups: list[DuplicateGroup]) -> dict[int, int]:
    return {item_id: number for number, group in enumerate(groups) for item_id in group.ids}


def _check_well_formed(groups: list[DuplicateGroup], threshold: float) -> None:
    assert all(group.size >= 2 and list(group.ids) == sorted(set(group.ids)) for group in groups)
    assert [group.ids[0] for group in groups] == sorted(group.ids[0] for group in groups)
    assert len(_group_of(groups)) == sum(group.size for group in groups)  # no item in two groups
    for group in groups:
        assert threshold - 1e-6 <= group.min_similarity <= group.max_similarity <= 1 + 1e-6


# -- the acceptance test: copies of distinct originals -------------------------------------------


def test_every_copy_is_grouped_with_its_original_alone(photos: Photos) -> None:
    index = photos.collection.index
    assert index is not None and len(index) == len(photos.ids)
    groups = find_duplicates(index, threshold=TINY_THRESHOLD)
    _check_well_formed(groups, TINY_THRESHOLD)
    names = photos.names
    found = sorted(sorted(names[i] for i in group.ids) for group in groups)
    with_copies = [name for name in photos.originals() if f"{name}-crop" in photos.ids]
    expected = sorted(sorted([name] + [f"{name}-{kind}" for kind in COPY_KINDS]) for name in with_copies)
    assert found == expected  # each group: one original and its three copies, nothing else


def test_default_threshold_groups_every_copy_with_its_original(photos: Photos) -> None:
    """At the default threshold (meant for CLIP) the tiny model also joins unrelated originals
    (see the module docstring), so only the copies' side of the criterion is checked here."""
    index = photos.collection.index
    assert index is not None
    groups = find_duplicates(index)
    assert groups == find_duplicates(index, threshold=DEFAULT_THRESHOLD)
    _check_well_formed(groups, DEFAULT_THRESHOLD)
    group_of = _group_of(groups)
    for copy in photos.copies():
        original = copy.split("-")[0]
        assert photos.ids[copy] in group_of and group_of[photos.ids[copy]] == group_of.get(photos.ids[original]), copy


def test_defaults_agree() -> None:
    assert duplicates_command.DEFAULT_THRESHOLD == DEFAULT_THRESHOLD  # the CLI's copy (kept for a fast --help)
    assert duplicates_command.DEFAULT_NEIGHBOURS == DEFAULT_NEIGHBOURS


def test_temporary_ivf_index_finds_the_same_groups(photos: Photos, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``ivf_above`` items an exhaustive index is searched through a temporary IVF index;
    probing every list (75 items: 8 lists) it must find what the exhaustive search finds."""
    index = photos.collection.index
    assert isinstance(index, ADCIndex)
    built = []
    original = duplicates_module._temporary_ivf

    def recording(*args: object, **kwargs: object) -> object:
        built.append(original(*args, **kwargs))  # type: ignore[arg-type]
        return built[-1]

    monkeypatch.setattr(duplicates_module, "_temporary_ivf", recording)
    exhaustive = find_duplicates(index, threshold=TINY_THRESHOLD)
    assert not built
    through_ivf = find_duplicates(index, threshold=TINY_THRESHOLD, ivf_above=10, nprobe=64)
    assert len(built) == 1 and len(built[0]) == len(index)
    assert [g.ids for g in through_ivf] == [g.ids for g in exhaustive]
    assert through_ivf and all(abs(a.min_similarity - b.min_similarity) < 1e-5 for a, b in zip(through_ivf, exhaustive))


def test_batches_do_not_change_the_groups(photos: Photos) -> None:
    index = photos.collection.index
    assert index is not None
    whole = find_duplicates(index, threshold=TINY_THRESHOLD, batch=10_000)
    assert find_duplicates(index, threshold=TINY_THRESHOLD, batch=7, progress=True) == whole


def test_source_uris(photos: Photos) -> None:
    wanted = [photos.ids["o00"], photos.ids["o00-q50"], 10**9]
    uris = source_uris(photos.collection, wanted)
    assert set(uris) == set(wanted[:2])  # an unknown id is left out
    assert uris[photos.ids["o00"]].startswith("upload://") and uris[photos.ids["o00"]].endswith("/o00.png")
    assert uris[photos.ids["o00-q50"]].endswith("/o00-q50.jpg")


# -- the command -------------------------------------------------------------------------------


def _cli(photos: Photos, *args: str) -> object:
    env = {"SEMSTORE_MODEL": TINY_TEST_MODEL, "SEMSTORE_PRETRAINED": None, "SEMSTORE_DEBUG": None, "COLUMNS": "300"}
    options = ["-c", "photos", "--db", photos.url, "--data-dir", str(photos.data_dir), "--no-progress"]
    return runner.invoke(app, ["duplicates", *options, *args], env=env)


def test_cli_json(photos: Photos) -> None:
    result = _cli(photos, "--json", "--threshold", str(TINY_THRESHOLD), "--limit", "0")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    index = photos.collection.index
    assert index is not None
    expected = find_duplicates(index, threshold=TINY_THRESHOLD)
    assert body["threshold"] == TINY_THRESHOLD and body["total"] == len(expected) == len(body["groups"])
    names = photos.names
    for group, want in zip(body["groups"], expected):
        assert group["ids"] == list(want.ids)
        assert [uri.rsplit("/", 1)[1].split(".")[0] for uri in group["source_uris"]] == [names[i] for i in want.ids]
        assert group["min_similarity"] == pytest.approx(want.min_similarity)
        assert group["max_similarity"] == pytest.approx(want.max_similarity)
    limited = json.loads(_cli(photos, "--json", "--threshold", str(TINY_THRESHOLD), "--limit", "2").stdout)
    assert limited["total"] == len(expected) and limited["groups"] == body["groups"][:2]


def test_cli_uses_the_default_threshold(photos: Photos) -> None:
    result = _cli(photos, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    index = photos.collection.index
    assert index is not None
    assert body["threshold"] == DEFAULT_THRESHOLD
    assert body["total"] == len(find_duplicates(index))


def test_cli_table(photos: Photos) -> None:
    result = _cli(photos, "--threshold", str(TINY_THRESHOLD), "--limit", "3")
    assert result.exit_code == 0, result.output
    assert f"15 groups at threshold {TINY_THRESHOLD:g}, first 3 shown" in result.stdout
    for column in ("group", "size", "ids", "sources", "similarity"):
        assert column in result.stdout
    assert "o00-q50.jpg" in result.stdout and "o02-crop.png" in result.stdout and "o06-crop.png" not in result.stdout
    index = photos.collection.index
    assert index is not None
    identical = find_duplicates(index, threshold=1.0)  # items with identical codes, if any
    strict = _cli(photos, "--threshold", "1")
    assert strict.exit_code == 0, strict.output
    if identical:
        assert f"{len(identical)} groups at threshold 1" in strict.stdout
    else:
        assert "no near-duplicates at threshold 1" in strict.stdout


def test_cli_empty_and_missing_collections(photos: Photos) -> None:
    photos.collection.database.create_collection("empty", exist_ok=True)  # no codec, no index yet
    env = {"SEMSTORE_MODEL": TINY_TEST_MODEL, "SEMSTORE_PRETRAINED": None, "SEMSTORE_DEBUG": None}
    options = ["--db", photos.url, "--data-dir", str(photos.data_dir), "--no-progress"]
    empty = runner.invoke(app, ["duplicates", "-c", "empty", "--json", *options], env=env)
    assert empty.exit_code == 0, empty.output
    assert json.loads(empty.stdout) == {"threshold": DEFAULT_THRESHOLD, "total": 0, "groups": []}
    missing = runner.invoke(app, ["duplicates", "-c", "nope", *options], env=env)
    assert missing.exit_code == 1 and missing.stderr.startswith("error: ") and "nope" in missing.stderr


@pytest.mark.parametrize("value", ["0", "-0.5", "1.01", "nan"])
def test_cli_refuses_a_bad_threshold(photos: Photos, value: str) -> None:
    result = _cli(photos, "--threshold", value)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().startswith("error: threshold must be in (0, 1]")


# -- grouping on hand-built indexes -----------------------------------------------------------


@pytest.fixture(scope="module")
def small_codec() -> PQVAECodec:
    x = np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)
    return PQVAECodec(dim=16, num_subvectors=4, codebook_size=64, iterations=1).fit(x, progress=False)


def _colliding_codes(codec: PQVAECodec, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """100 random codes, 12 exact code copies (some twice: groups of 3), 15 copies differing in one sub-vector."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, codec.codebook_size, (100, codec.num_subvectors))
    exact = base[[3, 3, 10, 20, 20, 30, 41, 52, 63, 74, 85, 96]]
    near = base[rng.choice(100, 15, replace=False)].copy()
    near[np.arange(15), rng.integers(0, codec.num_subvectors, 15)] = rng.integers(0, codec.codebook_size, 15)
    codes = np.concatenate([base, exact, near])
    ids = rng.permutation(np.arange(1000, 1000 + 3 * len(codes), 3))  # not contiguous, not in order
    return ids, codes


def _brute_force(codec: PQVAECodec, ids: np.ndarray, codes: np.ndarray, threshold: float) -> list[tuple[tuple[int, ...], float, float]]:
    """Connected components of the all-pairs decoded-cosine graph (a plain BFS), with their edges' min / max."""
    decoded = codec.decode(codes, normalize=True).astype(np.float64)
    similar = decoded @ decoded.T >= threshold - 1e-6
    np.fill_diagonal(similar, False)
    seen, components = set(), []
    for start in range(len(ids)):
        if start in seen or not similar[start].any():
            continue
        members, todo = {start}, [start]
        while todo:
            for other in np.flatnonzero(similar[todo.pop()]):
                if int(other) not in members:
                    members.add(int(other))
                    todo.append(int(other))
        seen |= members
        rows = sorted(members)
        block = (decoded[rows] @ decoded[rows].T)[similar[np.ix_(rows, rows)]]
        components.append((tuple(sorted(int(ids[m]) for m in members)), float(block.min()), float(block.max())))
    return sorted(components)


@pytest.mark.parametrize("threshold", [1.0, 0.97, 0.9, 0.8])
def test_groups_match_brute_force(small_codec: PQVAECodec, threshold: float) -> None:
    ids, codes = _colliding_codes(small_codec)
    index = ADCIndex.build(small_codec, ids, codes)
    expected = _brute_force(small_codec, ids, codes, threshold)
    assert expected  # the planted copies make groups at every threshold
    groups = find_duplicates(index, threshold=threshold, neighbours=len(ids) - 1, batch=16)
    _check_well_formed(groups, threshold)
    assert [g.ids for g in groups] == [e[0] for e in expected]
    for group, (_, low, high) in zip(groups, expected):
        assert group.min_similarity == pytest.approx(low, abs=1e-5) and group.max_similarity == pytest.approx(high, abs=1e-5)


def test_identical_codes_group_at_threshold_one(small_codec: PQVAECodec) -> None:
    ids, codes = _colliding_codes(small_codec)
    by_code = defaultdict(list)
    for item_id, row in zip(ids.tolist(), map(tuple, codes.tolist())):
        by_code[row].append(item_id)
    expected = sorted(tuple(sorted(same)) for same in by_code.values() if len(same) > 1)
    assert [len(g) for g in expected].count(3) == 2  # items 3 and 20 were copied twice
    groups = find_duplicates(ADCIndex.build(small_codec, ids, codes), threshold=1.0)  # default neighbours
    assert [g.ids for g in groups] == expected
    assert all(g.min_similarity >= 1 - 1e-6 for g in groups)


def test_tiny_indexes(small_codec: PQVAECodec) -> None:
    codes = np.zeros((2, small_codec.num_subvectors), dtype=np.int64)
    assert find_duplicates(ADCIndex.build(small_codec, [5], codes[:1])) == []
    assert find_duplicates(ADCIndex(small_codec)) == []
    (group,) = find_duplicates(ADCIndex.build(small_codec, [9, 4], codes), threshold=1.0)
    assert group.ids == (4, 9) and group.size == 2


class _DeletingIndex:
    """An ADCIndex whose first ``codes_for`` call first deletes ``victim`` (as a concurrent delete would)."""

    def __init__(self, index: ADCIndex, victim: int) -> None:
        self.index, self.victim, self.codec = index, victim, index.codec

    def ids(self) -> np.ndarray:
        return self.index.ids()

    def codes_for(self, ids: object) -> np.ndarray:
        if self.victim is not None:
            self.index.remove([self.victim])
            self.victim = None
        return self.index.codes_for(ids)

    def search(self, queries: np.ndarray, k: int, *, rerank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k, rerank=rerank)


def test_items_deleted_during_the_join_are_skipped(small_codec: PQVAECodec) -> None:
    ids, codes = _colliding_codes(small_codec)
    by_code = defaultdict(list)
    for item_id, row in zip(ids.tolist(), map(tuple, codes.tolist())):
        by_code[row].append(item_id)
    victim = next(same[0] for same in by_code.values() if len(same) == 2)  # one of a pair of identical codes
    index = ADCIndex.build(small_codec, ids, codes)
    groups = find_duplicates(_DeletingIndex(index, victim), threshold=1.0, batch=8)  # type: ignore[arg-type]
    assert len(index) == len(ids) - 1
    assert groups == find_duplicates(index, threshold=1.0) and all(victim not in g.ids for g in groups)


def test_group_pairs_unions_transitively() -> None:
    groups = group_pairs([30, 7, 2, 9, 7, 5], [2, 9, 30, 40, 7, 6], [0.96, 0.99, 0.97, 0.951, 1.0, 0.98])
    assert groups == [
        DuplicateGroup((2, 30), 0.96, 0.97),  # the same pair twice (both directions)
        DuplicateGroup((5, 6), 0.98, 0.98),
        DuplicateGroup((7, 9, 40), 0.951, 0.99),  # 7 ~ 9 ~ 40: 7 and 40 join through 9; 7 ~ 7 is ignored
    ]
    chain = group_pairs(np.arange(1, 50), np.arange(2, 51), np.linspace(0.9, 1.0, 49))
    assert chain == [DuplicateGroup(tuple(range(1, 51)), 0.9, 1.0)]
    assert group_pairs([], [], []) == [] and group_pairs([3], [3], [1.0]) == []
    with pytest.raises(ValueError, match="differ in length"):
        group_pairs([1, 2], [3], [0.9, 0.9])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold": 0}, r"threshold must be in \(0, 1\]"),
        ({"threshold": -0.2}, r"threshold must be in \(0, 1\]"),
        ({"threshold": 1.0001}, r"threshold must be in \(0, 1\]"),
        ({"threshold": float("nan")}, r"threshold must be in \(0, 1\]"),
        ({"threshold": float("inf")}, r"threshold must be in \(0, 1\]"),
        ({"threshold": True}, "threshold must be a number"),
        ({"threshold": "0.9"}, "threshold must be a number"),
        ({"neighbours": 0}, "neighbours must be an integer >= 1"),
        ({"neighbours": 2.5}, "neighbours must be an integer >= 1"),
        ({"neighbours": True}, "neighbours must be an integer >= 1"),
        ({"batch": 0}, "batch must be an integer >= 1"),
        ({"nprobe": 0}, "nprobe must be an integer >= 1"),
        ({"ivf_above": -1}, "ivf_above must be an integer >= 0"),
    ],
)
def test_argument_errors(small_codec: PQVAECodec, options: dict, message: str) -> None:
    index = ADCIndex.build(small_codec, [1, 2], np.zeros((2, small_codec.num_subvectors), dtype=np.int64))
    with pytest.raises(ValueError, match=message):
        find_duplicates(index, **options)
