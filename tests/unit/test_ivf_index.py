"""The product path's IVF index (semstore.index.ivf_index): the ADCIndex contract, and equal
to the exhaustive index when every list is probed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semstore.index import ADCIndex, IndexLoadError
from semstore.index.ivf_index import IVFIndex
from tests.unit.test_index import item_ids

# fixtures shared with test_index
from tests.unit.test_index import coded, data, make_codec, queries  # noqa: F401


@pytest.fixture
def both(coded):  # noqa: ANN001, ANN201
    codec, codes = coded(256)
    ids = item_ids(len(codes))
    return IVFIndex.build(codec, ids, codes, nlist=8), ADCIndex.build(codec, ids, codes), ids, codes


@pytest.mark.parametrize("rerank", [None, 50])
def test_every_list_probed_equals_the_exhaustive_index(both, queries, rerank) -> None:  # noqa: ANN001
    ivf, flat, _, _ = both
    s1, i1 = ivf.search(queries, 10, rerank=rerank, nprobe=ivf.nlist)
    s2, i2 = flat.search(queries, 10, rerank=rerank)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert (i1 == i2).mean() > 0.99  # equal scores may swap places


def test_fewer_lists_scan_fewer_items_with_exact_scores(both, queries) -> None:  # noqa: ANN001
    ivf, flat, _, _ = both
    scores, ids = ivf.search(queries, 5, nprobe=1)
    exact = {int(i): float(s) for i, s in zip(*(a.ravel() for a in flat.search(queries[:1], len(flat))[::-1]))}
    for i, s in zip(ids[0], scores[0]):
        assert i >= 0 and abs(exact[int(i)] - s) < 1e-4  # a probed item's score is its exact ADC score


def test_allowed_ids_score_every_allowed_item(both, queries) -> None:  # noqa: ANN001
    ivf, flat, ids, _ = both
    allowed = ids[::7]
    s1, i1 = ivf.search(queries, 5, allowed_ids=allowed, nprobe=1)  # even outside the probed lists
    s2, i2 = flat.search(queries, 5, allowed_ids=allowed)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert set(i1.ravel()) <= set(allowed.tolist())


def test_add_remove_and_codes(both) -> None:  # noqa: ANN001
    ivf, _, ids, codes = both
    assert ivf.remove(ids[:10]) == 10 and len(ivf) == len(ids) - 10
    assert ivf.remove(ids[:10]) == 0
    with pytest.raises(KeyError):
        ivf.codes_for(ids[:1])
    assert ivf.add(ids[:10], codes[:10]) == 10
    with pytest.raises(ValueError, match="already in the index"):
        ivf.add(ids[:1], codes[:1])
    assert ivf.add(ids[:3], codes[:3], skip_present=True) == 0
    np.testing.assert_array_equal(ivf.codes_for(ids[::-1]), codes[::-1])  # the stored codes, any order
    np.testing.assert_array_equal(ivf.ids(), np.sort(ids))


def test_save_and_load(both, tmp_path: Path) -> None:  # noqa: ANN001
    ivf, _, ids, codes = both
    ivf.save(tmp_path, ivf.current_version(9))
    back = IVFIndex.load(tmp_path, ivf.codec)
    assert back.saved_version is not None and back.saved_version.revision == 9 and back.nlist == 8
    np.testing.assert_array_equal(back.codes_for(ids), codes)
    with pytest.raises(IndexLoadError):
        ADCIndex.load(tmp_path, ivf.codec)  # an IVF directory is never served as an exhaustive index


def test_four_bit_codecs_stay_exhaustive(coded) -> None:  # noqa: ANN001
    codec, codes = coded(16)
    with pytest.raises(ValueError, match="more than 16"):
        IVFIndex.build(codec, item_ids(len(codes)), codes)


def test_lists_chosen_in_the_embedding_space_are_faiss_own_choice(both, queries) -> None:  # noqa: ANN001
    # search picks lists with the dim-wide embedding-space centroids, not FAISS's M*d-wide
    # quantizer: both must rank the lists alike, and nprobe=3 must equal FAISS's own search.
    ivf, _, _, _ = both
    sub, offset = ivf.codec.query_parts(queries)
    _, by_faiss = ivf._ivf.quantizer.search(sub, 3)
    _, by_embedding = ivf._assigner.search(np.ascontiguousarray(queries, dtype=np.float32), 3)
    np.testing.assert_array_equal(by_embedding, by_faiss)
    import faiss

    faiss_scores, faiss_ids = ivf._ivf.search(sub, 10, params=faiss.SearchParametersIVF(nprobe=3))
    scores, ids = ivf.search(queries, 10, nprobe=3)
    np.testing.assert_allclose(scores, faiss_scores + offset[:, None], atol=1e-5)
    assert (ids == faiss_ids).mean() > 0.99


def test_memory_is_codes_twice_and_ids_twice_plus_the_centroids(both) -> None:  # noqa: ANN001
    ivf, _, ids, _ = both
    codec = ivf.codec
    code_bytes = codec.num_subvectors  # 8-bit codes: one byte per sub-vector
    centroids = ivf.nlist * 4 * (codec.num_subvectors * codec.subvector_dim + codec.dim)
    assert ivf.memory_bytes == len(ids) * (2 * code_bytes + 16) + centroids  # list code + id, table code + id
    assert ivf.bytes_per_item == pytest.approx(ivf.memory_bytes / len(ids))
