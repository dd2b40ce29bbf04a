"""Unit tests of the IVF coarse partition over stored codes (semstore.index.ivf); correctness only."""

from __future__ import annotations

import numpy as np
import pytest

from semstore.index.ivf import IVFADCIndex, default_nlist
from tests.unit.test_index import assert_exact_top_k, exact_scores, item_ids

# fixtures data, queries, make_codec and coded are shared with test_index
from tests.unit.test_index import coded, data, make_codec, queries  # noqa: F401


@pytest.mark.parametrize("codebook_size", [16, 256])
def test_all_lists_probed_equals_brute_force(coded, queries, codebook_size: int) -> None:
    codec, codes = coded(codebook_size)
    ids = item_ids(len(codes))
    index = IVFADCIndex.build(codec, ids, codes, nlist=8)
    assert (len(index), index.nlist, int(index.list_sizes().sum())) == (len(codes), 8, len(codes))
    # refine * k >= n: the fast-scan candidates cover every item, so the re-ranked top-k is exact
    scores, found = index.search(queries, k=10, nprobe=8, refine=len(codes))
    assert scores.dtype == np.float32 and found.dtype == np.int64
    assert_exact_top_k(scores, found, exact_scores(codec, queries, codes), ids, 10)


@pytest.mark.parametrize("codebook_size", [16, 256])
def test_scores_are_exact_adc_scores_with_few_lists_probed(coded, queries, codebook_size: int) -> None:
    codec, codes = coded(codebook_size)
    ids = item_ids(len(codes))
    index = IVFADCIndex.build(codec, ids, codes, nlist=16)
    scores, found = index.search(queries, k=5, nprobe=2)
    exact = exact_scores(codec, queries, codes)
    position = {int(i): p for p, i in enumerate(ids)}
    for q, row in enumerate(found):
        valid = row >= 0
        own = [exact[q, position[int(i)]] for i in row[valid]]
        np.testing.assert_allclose(scores[q, valid], own, rtol=1e-4, atol=1e-4)
        assert np.all(np.diff(scores[q, valid]) <= 1e-6)  # best first
        assert np.all(np.isneginf(scores[q, ~valid]))


def test_probed_lists_only(coded, queries) -> None:
    """With nprobe=1 every hit comes from the one list whose centroid scores best."""
    codec, codes = coded(16)
    ids = item_ids(len(codes))
    index = IVFADCIndex.build(codec, ids, codes, nlist=16)
    _, found = index.search(queries, k=10, nprobe=1)
    sub = codec.query_transform(queries)
    centroids = index._ivf.quantizer.reconstruct_n(0, index.nlist)
    best_list = np.argmax(sub @ centroids.T, axis=1)
    members = {number: {int(ids[p]) for p in _list_positions(index, number)} for number in range(index.nlist)}
    for q, row in enumerate(found):
        assert set(row[row >= 0].tolist()) <= members[int(best_list[q])]


def _list_positions(index: IVFADCIndex, number: int) -> np.ndarray:
    import faiss

    size = index._ivf.invlists.list_size(number)
    return faiss.rev_swig_ptr(index._ivf.invlists.get_ids(number), size).copy() if size else np.empty(0, np.int64)


@pytest.mark.parametrize("codebook_size", [16, 256])
def test_codes_stay_the_stored_codes(coded, codebook_size: int) -> None:
    codec, codes = coded(codebook_size)
    ids = item_ids(len(codes))
    index = IVFADCIndex.build(codec, ids, codes, nlist=4)
    chosen = ids[[5, 0, 17, 399]]
    np.testing.assert_array_equal(index.codes_for(chosen), codes[[5, 0, 17, 399]])
    assert index.codes_for(chosen).dtype == codec.code_dtype
    with pytest.raises(KeyError, match="not in the index"):
        index.codes_for([1])


def test_invalid_input_is_rejected(coded, queries) -> None:
    codec, codes = coded(16)
    ids = item_ids(len(codes))
    with pytest.raises(ValueError, match="code rows"):
        IVFADCIndex.build(codec, ids[:-1], codes)
    with pytest.raises(ValueError, match="repeated"):
        IVFADCIndex.build(codec, np.zeros(len(codes), dtype=np.int64), codes)
    with pytest.raises(ValueError, match="nlist"):
        IVFADCIndex.build(codec, ids, codes, nlist=len(codes) + 1)
    with pytest.raises(ValueError, match="out of range"):
        IVFADCIndex.build(codec, ids, np.full_like(codes, 16))
    index = IVFADCIndex.build(codec, ids, codes, nlist=4)
    for bad in ({"k": 0}, {"k": 3, "nprobe": 0}, {"k": 3, "refine": True}):
        with pytest.raises(ValueError, match="positive integer"):
            index.search(queries, **bad)


def test_memory_and_default_nlist(coded) -> None:
    codec, codes = coded(16)
    index = IVFADCIndex.build(codec, item_ids(len(codes)), codes)
    assert index.nlist == default_nlist(len(codes)) == 16  # 2 ** round(log2(sqrt(400)))
    # 16 B/item of 4-bit list codes + list ids + flat re-rank codes + id array + lookup
    assert index.memory_bytes / len(index) == pytest.approx(2 + 8 + 2 + 8 + 16)
    assert default_nlist(1) == 1 and default_nlist(10**6) == 1024
