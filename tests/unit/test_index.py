"""Unit tests of the FAISS ADC index over a shared-codebook codec (semstore.index)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest

from semstore.codec import PQVAECodec
from semstore.index import (
    ADCIndex,
    IndexCorruptError,
    IndexLoadError,
    IndexNotFoundError,
    IndexStaleError,
    IndexVersion,
)
from semstore.index.layouts import pack_codes, unpack_codes

DIM = 32
M = 4


def clustered(n: int, dim: int = DIM, seed: int = 0, clusters: int = 12) -> np.ndarray:
    """Unit vectors around a few centres, roughly like image embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(clusters, size=n)] + 0.5 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(400)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(12, seed=5)


@pytest.fixture(scope="module")
def make_codec(data: np.ndarray) -> Callable[[int], PQVAECodec]:
    """Tiny codecs (one training iteration, greedy encoding), trained once per module.

    The training beam is pinned: the brute-force comparisons below need queries whose 10th
    and 11th scores differ, which depends on how these few codes spread.
    """
    cache: dict[int, PQVAECodec] = {}

    def make(codebook_size: int) -> PQVAECodec:
        if codebook_size not in cache:
            codec = PQVAECodec(
                dim=DIM, num_subvectors=M, codebook_size=codebook_size,
                iterations=1, kmeans_iterations=2, beam_size=1, train_beam_size=4,
            )
            cache[codebook_size] = codec.fit(data[:200], seed=codebook_size, progress=False)
        return cache[codebook_size]

    return make


@pytest.fixture(scope="module")
def coded(make_codec, data: np.ndarray) -> Callable[[int], tuple[PQVAECodec, np.ndarray]]:
    """(codec, codes of ``data``) for a codebook size, encoded once per module."""
    cache: dict[int, np.ndarray] = {}

    def make(codebook_size: int) -> tuple[PQVAECodec, np.ndarray]:
        codec = make_codec(codebook_size)
        if codebook_size not in cache:
            cache[codebook_size] = codec.encode(data)
        return codec, cache[codebook_size]

    return make


def item_ids(n: int) -> np.ndarray:
    """Sparse, shuffled database ids, so positions and ids never coincide."""
    return (1000 + 7 * np.random.default_rng(1).permutation(n)).astype(np.int64)


def exact_scores(codec: PQVAECodec, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return queries @ codec.decode(codes, normalize=False).T


def assert_exact_top_k(
    scores: np.ndarray, ids: np.ndarray, exact: np.ndarray, all_ids: np.ndarray, k: int
) -> None:
    """Returned scores are the exact top-k scores, and each id really has its score (ties allowed)."""
    position = {int(i): p for p, i in enumerate(all_ids)}
    best = -np.sort(-exact, axis=1)[:, :k]
    np.testing.assert_allclose(scores, best, rtol=1e-4, atol=1e-4)
    own = np.array([[exact[q, position[int(i)]] for i in row] for q, row in enumerate(ids)])
    np.testing.assert_allclose(scores, own, rtol=1e-4, atol=1e-4)
    assert all(len(set(row.tolist())) == k for row in ids)


@pytest.mark.parametrize("codebook_size, nbits", [(16, 4), (64, 6), (100, 7), (256, 8), (1024, 10)])
def test_pq_layout_scores_equal_brute_force(coded, queries, codebook_size: int, nbits: int) -> None:
    codec, codes = coded(codebook_size)
    ids = item_ids(len(codes))
    index = ADCIndex.build(codec, ids, codes, layout="pq")
    assert (index.layout, index.nbits, len(index)) == ("pq", nbits, len(codes))
    scores, found = index.search(queries, k=10)
    assert scores.shape == found.shape == (len(queries), 10)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    exact = exact_scores(codec, queries, codes)
    assert_exact_top_k(scores, found, exact, ids, 10)
    # where the 10th and 11th scores are not tied, the id sets agree with brute force exactly
    order = np.argsort(-exact, axis=1, kind="stable")
    ranked = np.take_along_axis(exact, order, axis=1)
    separated = ranked[:, 9] - ranked[:, 10] > 1e-4
    assert separated.sum() >= len(queries) // 2
    for q in np.nonzero(separated)[0]:
        assert set(ids[order[q, :10]].tolist()) == set(found[q].tolist())


def test_layout_is_chosen_from_codebook_size(make_codec) -> None:
    assert ADCIndex(make_codec(16)).layout == "fastscan"
    assert ADCIndex(make_codec(64)).layout == "pq"
    assert ADCIndex(make_codec(16), layout="pq").layout == "pq"
    with pytest.raises(ValueError):
        ADCIndex(make_codec(64), layout="fastscan")
    with pytest.raises(ValueError):
        ADCIndex(make_codec(64), layout="ivf")


@pytest.mark.parametrize("nbits", [3, 4, 5, 7, 8, 10, 12, 16])
def test_code_packing_matches_faiss_encoder(nbits: int) -> None:
    rng = np.random.default_rng(nbits)
    m, width = 5, 3
    pq = faiss.ProductQuantizer(m * width, m, nbits)
    centroids = rng.standard_normal((m, 1 << nbits, width)).astype(np.float32)
    faiss.copy_array_to_vector(centroids.ravel(), pq.centroids)
    codes = rng.integers(0, 1 << nbits, size=(50, m))
    vectors = np.concatenate([centroids[j, codes[:, j]] for j in range(m)], axis=1)
    packed = pack_codes(codes, nbits)
    np.testing.assert_array_equal(packed, pq.compute_codes(vectors))
    np.testing.assert_array_equal(unpack_codes(packed, m, nbits), codes)


def test_fastscan_finds_nearly_the_exact_top_k(coded, queries) -> None:
    codec, codes = coded(16)
    ids = item_ids(len(codes))
    index = ADCIndex.build(codec, ids, codes)
    assert index.layout == "fastscan"
    scores, found = index.search(queries, k=10)
    exact = exact_scores(codec, queries, codes)
    top = ids[np.argsort(-exact, axis=1)[:, :10]]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top.tolist(), found.tolist())])
    assert recall >= 0.9
    # returned scores are exact ADC scores of the returned ids, best first
    position = {int(i): p for p, i in enumerate(ids)}
    own = np.array([[exact[q, position[int(i)]] for i in row] for q, row in enumerate(found)])
    np.testing.assert_allclose(scores, own, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


@pytest.mark.parametrize("codebook_size", [16, 256])
def test_rerank_scores_are_exact_cosines(coded, queries, codebook_size: int) -> None:
    codec, codes = coded(codebook_size)
    ids = item_ids(len(codes))
    index = ADCIndex.build(codec, ids, codes)
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    cosine = unit @ codec.decode(codes, normalize=True).T
    scores, found = index.search(queries, k=5, rerank=30)
    position = {int(i): p for p, i in enumerate(ids)}
    own = np.array([[cosine[q, position[int(i)]] for i in row] for q, row in enumerate(found)])
    np.testing.assert_allclose(scores, own, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    # re-ranking every item gives the exact cosine top-k
    scores_all, found_all = index.search(queries, k=5, rerank=len(ids))
    assert_exact_top_k(scores_all, found_all, cosine, ids, 5)


@pytest.mark.parametrize("codebook_size", [16, 100])
def test_remove(coded, queries, codebook_size: int) -> None:
    codec, codes = coded(codebook_size)
    ids = item_ids(len(codes))
    index = ADCIndex.build(codec, ids, codes)
    gone = ids[::3]
    assert index.remove(np.concatenate([gone, gone[:5], [5, 6]])) == len(gone)
    assert len(index) == len(ids) - len(gone)
    assert index.remove(gone) == 0
    keep = np.setdiff1d(np.arange(len(ids)), np.arange(0, len(ids), 3))
    assert sorted(index.ids().tolist()) == sorted(ids[keep].tolist())
    np.testing.assert_array_equal(index.codes_for(ids[keep][::-1]), codes[keep][::-1])
    scores, found = index.search(queries, k=10)
    assert not set(found.ravel().tolist()) & set(gone.tolist())
    if index.layout == "pq":
        assert_exact_top_k(scores, found, exact_scores(codec, queries, codes[keep]), ids[keep], 10)
    # removed ids can be added again
    index.add(gone[:3], codes[:3])
    np.testing.assert_array_equal(index.codes_for(gone[:3]), codes[:3])


def test_duplicate_and_invalid_adds_are_rejected_atomically(make_codec, data) -> None:
    codec = make_codec(64)
    codes = codec.encode(data[:50])
    index = ADCIndex.build(codec, np.arange(50), codes)
    with pytest.raises(ValueError, match="already in the index"):
        index.add([100, 101, 7], codes[:3])
    with pytest.raises(ValueError, match="repeated"):
        index.add([200, 200], codes[:2])
    with pytest.raises(ValueError):
        index.add([300, 301], np.full((2, M), 64))  # code out of range
    with pytest.raises(ValueError):
        index.add([400], codes[:2])  # count mismatch
    with pytest.raises(ValueError):
        index.add([-1], codes[:1])
    with pytest.raises(ValueError):
        index.add([1.5], codes[:1])
    assert len(index) == 50 and index.ids().max() == 49
    index.add([], np.empty((0, M), dtype=np.uint8))
    assert len(index) == 50


@pytest.mark.parametrize("codebook_size", [16, 256])
def test_allowed_ids_filter(coded, queries, codebook_size: int) -> None:
    codec, codes = coded(codebook_size)
    ids = item_ids(len(codes))
    index = ADCIndex.build(codec, ids, codes)
    subset = np.arange(5, len(ids), 4)
    allowed = np.concatenate([ids[subset], [1, 2, 3]])  # unknown ids are ignored
    scores, found = index.search(queries, k=8, allowed_ids=allowed)
    assert set(found.ravel().tolist()) <= set(ids[subset].tolist())
    assert_exact_top_k(scores, found, exact_scores(codec, queries, codes[subset]), ids[subset], 8)
    # fewer allowed items than k: padded
    scores, found = index.search(queries[:2], k=5, allowed_ids=ids[:3].tolist())
    assert set(found[:, :3].ravel().tolist()) == set(ids[:3].tolist())
    assert np.all(found[:, 3:] == -1) and np.all(np.isneginf(scores[:, 3:]))
    scores, found = index.search(queries[:2], k=4, allowed_ids=[], rerank=10)
    assert np.all(found == -1) and np.all(np.isneginf(scores))
    # filter and re-rank together
    scores, found = index.search(queries, k=3, allowed_ids=ids[subset], rerank=20)
    assert set(found.ravel().tolist()) <= set(ids[subset].tolist())


@pytest.mark.parametrize("codebook_size", [16, 100, 1024])
def test_codes_for_round_trip(coded, codebook_size: int) -> None:
    codec, codes = coded(codebook_size)
    ids = item_ids(len(codes))
    index = ADCIndex(codec)
    for start in range(0, len(ids), 90):  # several adds: fast-scan merges blocks
        index.add(ids[start : start + 90], codes[start : start + 90])
    order = np.random.default_rng(2).permutation(len(ids))[:120]
    got = index.codes_for(ids[order])
    assert got.dtype == codec.code_dtype
    np.testing.assert_array_equal(got, codes[order])
    assert index.codes_for([]).shape == (0, M)
    with pytest.raises(KeyError):
        index.codes_for([ids[0], 3])


def test_padding_and_empty_index(make_codec, data, queries) -> None:
    codec = make_codec(16)
    for layout in ("pq", "fastscan"):
        index = ADCIndex(codec, layout=layout)
        scores, found = index.search(queries[0], k=3)
        assert found.shape == (1, 3) and np.all(found == -1) and np.all(np.isneginf(scores))
        index.add([10, 20], codec.encode(data[:2]))
        scores, found = index.search(queries, k=5, rerank=4)
        assert np.all(found[:, 2:] == -1) and np.all(np.isneginf(scores[:, 2:]))
        assert set(found[:, :2].ravel().tolist()) == {10, 20} and np.all(np.isfinite(scores[:, :2]))
    with pytest.raises(ValueError):
        index.search(queries, k=0)
    with pytest.raises(ValueError):
        index.search(queries, k=3, rerank=0)
    with pytest.raises(ValueError):
        index.search(queries[:, :5], k=3)


def test_memory_estimate(coded) -> None:
    codec, codes = coded(256)
    index = ADCIndex.build(codec, item_ids(len(codes)), codes)
    # M bytes of codes + 8 (id map) + 16 (id lookup)
    assert index.bytes_per_item == pytest.approx(M + 24)
    assert index.memory_bytes == len(codes) * (M + 24)


@pytest.mark.parametrize("codebook_size", [16, 256])
def test_ids_in_order_need_no_lookup_copy(coded, queries, codebook_size: int) -> None:
    """Increasing ids (the database's order) are looked up in the id map itself: 8 B/item for ids."""
    codec, codes = coded(codebook_size)
    row_bytes = M if codebook_size == 256 else M // 2
    ids = np.arange(len(codes), dtype=np.int64) * 3 + 10
    index = ADCIndex.build(codec, ids[:300], codes[:300])
    index.add(ids[300:350], codes[300:350])  # still increasing
    assert index.memory_bytes == 350 * (row_bytes + 8) + (index._store.code_bytes() - 350 * row_bytes)
    assert index.remove(ids[[0, 7, 349]]) == 3
    kept = np.delete(np.arange(350), [0, 7, 349])
    np.testing.assert_array_equal(index.codes_for(ids[kept][::-1]), codes[kept][::-1])
    assert index.current_version().max_id == ids[348] and len(index) == 347
    scores, found = index.search(queries, k=10, rerank=20 if codebook_size == 16 else None)
    if codebook_size == 256:
        assert_exact_top_k(scores, found, exact_scores(codec, queries, codes[kept]), ids[kept], 10)
    with pytest.raises(ValueError, match="already in the index"):
        index.add(ids[[5]], codes[[5]])
    # an id below the largest one switches to the sorted copy (16 B/item more); lookups stay right
    index.add(ids[[0]], codes[[0]])
    index.add(ids[350:], codes[350:])
    assert index.memory_bytes == index._store.code_bytes() + len(index) * (8 + 16)
    everything = np.concatenate([kept, [0], np.arange(350, len(codes))])
    np.testing.assert_array_equal(index.codes_for(ids[everything]), codes[everything])
    assert index.remove(ids[[0, 380]]) == 2
    remaining = everything[(everything != 0) & (everything != 380)]
    np.testing.assert_array_equal(index.codes_for(ids[remaining]), codes[remaining])
    with pytest.raises(KeyError):
        index.codes_for(ids[[380]])


@pytest.mark.parametrize("codebook_size", [16, 100])
def test_save_load_round_trip(coded, queries, tmp_path: Path, codebook_size: int) -> None:
    codec, codes = coded(codebook_size)
    ids = item_ids(len(codes))
    index = ADCIndex.build(codec, ids, codes)
    version = IndexVersion(codec.content_hash, len(ids), int(ids.max()), revision=3)
    first = index.save(tmp_path, version)
    index.remove(ids[:10])
    with pytest.raises(ValueError):
        index.save(tmp_path, version)  # count no longer matches
    version = index.current_version(revision=4)
    second = index.save(tmp_path, version)
    assert not first.exists() and second.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["config.json", second.name])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["layout"] == index.layout and config["version"] == version.to_dict()

    loaded = ADCIndex.load(tmp_path, codec, version)
    assert loaded.layout == index.layout and len(loaded) == len(index)
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    for kwargs in ({}, {"rerank": 20}, {"allowed_ids": ids[::2]}):
        expected = index.search(queries, k=7, **kwargs)
        got = loaded.search(queries, k=7, **kwargs)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(loaded.codes_for(ids[10:60]), codes[10:60])
    loaded.add(ids[:10], codes[:10])  # a loaded index stays mutable
    assert len(loaded) == len(ids)
    if index.layout == "fastscan":
        with pytest.raises(IndexStaleError):
            ADCIndex.load(tmp_path, codec, version, layout="pq")


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "flipped-byte": _flip_byte,
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "zero-length": lambda path: path.write_bytes(b""),
    "random-bytes": lambda path: path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size)),
    "deleted": lambda path: path.unlink(),
}


@pytest.fixture(scope="module")
def saved_state(coded) -> tuple[PQVAECodec, np.ndarray, np.ndarray, IndexVersion]:
    codec, codes = coded(64)
    codes = codes[:200]
    ids = item_ids(200)
    return codec, ids, codes, IndexVersion(codec.content_hash, len(ids), int(ids.max()), revision=1)


def _save_fresh(directory: Path, state) -> Path:
    codec, ids, codes, version = state
    return ADCIndex.build(codec, ids, codes).save(directory, version)


def _assert_rebuilds(directory: Path, state) -> None:
    codec, ids, codes, version = state
    calls = []

    def loader():
        calls.append(1)
        return ids, codes

    index, rebuilt = ADCIndex.load_or_build(directory, codec, version, loader)
    assert rebuilt and calls == [1] and len(index) == len(ids)
    again, rebuilt = ADCIndex.load_or_build(directory, codec, version, loader)
    assert not rebuilt and calls == [1]
    np.testing.assert_array_equal(again.codes_for(ids), codes)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_damaged_index_file_is_detected_and_rebuilt(saved_state, tmp_path: Path, kind: str) -> None:
    CORRUPTIONS[kind](_save_fresh(tmp_path, saved_state))
    with pytest.raises(IndexCorruptError):
        ADCIndex.load(tmp_path, saved_state[0], saved_state[3])
    _assert_rebuilds(tmp_path, saved_state)


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"format": "semstore-adc-index/1"}'])
def test_damaged_config_is_detected(saved_state, tmp_path: Path, content: str) -> None:
    _save_fresh(tmp_path, saved_state)
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(IndexCorruptError):
        ADCIndex.load(tmp_path, saved_state[0])
    _assert_rebuilds(tmp_path, saved_state)


def test_config_pointing_at_a_foreign_file_is_detected(saved_state, tmp_path: Path) -> None:
    path = _save_fresh(tmp_path, saved_state)
    config = json.loads((tmp_path / "config.json").read_text())
    config["index_file"] = "../elsewhere.faiss"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(IndexCorruptError):
        ADCIndex.load(tmp_path, saved_state[0])
    # a valid FAISS file of another shape, with a matching checksum, is still refused
    codec, ids, codes, version = saved_state
    other = faiss.IndexIDMap(faiss.IndexFlatIP(8))
    other.add_with_ids(np.zeros((len(ids), 8), dtype=np.float32), ids)
    faiss.write_index(other, str(path))
    config["index_file"] = path.name
    config["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(IndexCorruptError):
        ADCIndex.load(tmp_path, codec, version)


def test_missing_config_wrong_codec_and_stale_version(make_codec, saved_state, tmp_path: Path) -> None:
    codec, ids, codes, version = saved_state
    with pytest.raises(IndexNotFoundError):
        ADCIndex.load(tmp_path / "nothing-here", codec)
    _save_fresh(tmp_path, saved_state)
    assert isinstance(ADCIndex.load(tmp_path, codec), ADCIndex)
    other = make_codec(100)
    with pytest.raises(IndexStaleError, match="codec"):
        ADCIndex.load(tmp_path, other)
    for stale in (
        IndexVersion(codec.content_hash, version.count, version.max_id, version.revision + 1),
        IndexVersion(codec.content_hash, version.count + 1, version.max_id, version.revision),
        IndexVersion(codec.content_hash, version.count, version.max_id + 1, version.revision),
    ):
        with pytest.raises(IndexStaleError):
            ADCIndex.load(tmp_path, codec, stale)
    assert issubclass(IndexStaleError, IndexLoadError) and issubclass(IndexCorruptError, IndexLoadError)
    _assert_rebuilds(tmp_path, (codec, ids, codes, IndexVersion(codec.content_hash, len(ids), 1, 99)))
    (tmp_path / "config.json").unlink()
    _assert_rebuilds(tmp_path, saved_state)
    # a codec change rebuilds with the new codec
    new_codes = other.encode(clustered(200, seed=9))
    new_version = IndexVersion(other.content_hash, len(ids), int(ids.max()))
    index, rebuilt = ADCIndex.load_or_build(tmp_path, other, new_version, lambda: (ids, new_codes))
    assert rebuilt and index.codec is other


def test_load_or_build_refuses_a_loader_that_disagrees(saved_state, tmp_path: Path) -> None:
    codec, ids, codes, version = saved_state
    with pytest.raises(ValueError, match="changed"):
        ADCIndex.load_or_build(tmp_path, codec, version, lambda: (ids[:-1], codes[:-1]))
    assert not (tmp_path / "config.json").exists()
    index, rebuilt = ADCIndex.load_or_build(tmp_path, codec, None, lambda: (ids, codes))
    assert rebuilt and ADCIndex.load(tmp_path, codec, index.current_version()).ntotal == len(ids)


@pytest.mark.parametrize("codebook_size", [16, 64])
def test_concurrent_adds_removes_and_searches(coded, queries, codebook_size: int) -> None:
    codec, codes = coded(codebook_size)
    index = ADCIndex.build(codec, np.arange(100), codes[:100])
    errors: list[BaseException] = []
    done = threading.Event()
    batches = 30

    def writer() -> None:
        try:
            for b in range(batches):
                start = 10_000 + 10 * b
                index.add(np.arange(start, start + 10), codes[(10 * b) % 390 : (10 * b) % 390 + 10])
                if b % 3 == 0:
                    assert index.remove([start]) == 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not done.is_set():
                options = [{}, {"rerank": 15}, {"allowed_ids": np.arange(0, 100, 2)}]
                scores, found = index.search(queries[rng.integers(len(queries), size=3)], 10, **options[rng.integers(3)])
                assert np.all(found >= 0) and np.all(np.isfinite(scores))
                present = index.ids()
                index.codes_for(present[:5])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(index) == 100 + 10 * batches - batches // 3
    assert len(np.unique(index.ids())) == len(index)


@pytest.mark.parametrize("codebook_size", [16, 256])
def test_folded_query_transform_equals_the_stage_formula(make_codec, queries, codebook_size: int) -> None:
    codec = make_codec(codebook_size)
    params = codec._require()
    # the definition: q'_m = P_m^T T^{-1} q, concatenated over m; offset <q, mu>
    expected = np.einsum("nD,mDd->nmd", queries @ params["inverse_transform"], params["blocks"]).reshape(len(queries), -1)
    sub, offset = codec.query_transform(queries), codec.query_offset(queries)
    np.testing.assert_allclose(sub, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(offset, queries @ codec.mean, rtol=1e-4, atol=1e-5)
    assert sub.dtype == offset.dtype == np.float32
    single = codec.query_transform(queries[0])  # one query as a vector
    np.testing.assert_allclose(single, sub[:1], rtol=1e-4, atol=1e-5)
    bad = queries.copy()
    bad[0, 0] = np.nan
    for wrong in (bad, queries[:, :5], np.array([["a"] * DIM])):
        with pytest.raises(ValueError):
            codec.query_transform(wrong)
        with pytest.raises(ValueError):
            codec.query_offset(wrong)
