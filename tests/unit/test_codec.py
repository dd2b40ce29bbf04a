"""Unit tests of the PQ-VAE shared-codebook codec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semstore.codec import CodecNotFittedError, PQVAECodec


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 40) -> np.ndarray:
    """Normalised vectors around a few centres with a decaying spectrum, like real embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)) * (np.arange(1, dim + 1) ** -0.5)
    x = centres[rng.integers(clusters, size=n)] + 0.3 * rng.standard_normal((n, dim)) * (np.arange(1, dim + 1) ** -0.5)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(1500, 48)


@pytest.fixture(scope="module")
def codec(data: np.ndarray) -> PQVAECodec:
    return PQVAECodec(dim=48, num_subvectors=8, codebook_size=32, iterations=4).fit(data, seed=0, progress=False)


def test_round_trip_shapes_and_dtypes(codec: PQVAECodec, data: np.ndarray) -> None:
    codes = codec.encode(data[:10])
    assert codes.shape == (10, 8) and codes.dtype == np.uint8
    decoded = codec.decode(codes)
    assert decoded.shape == (10, 48) and decoded.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(decoded, axis=1), 1.0, rtol=1e-5)
    assert codec.bits_per_vector == 40.0
    assert codec.bytes_per_vector == 8
    assert codec.codebook.shape == (32, codec.subvector_dim)


def test_uint16_codes_for_large_codebooks() -> None:
    x = clustered(600, 16, seed=3)
    codec = PQVAECodec(dim=16, num_subvectors=2, codebook_size=1024, iterations=1).fit(x, progress=False)
    codes = codec.encode(x[:5])
    assert codes.dtype == np.uint16 and codes.max() < 1024
    assert codec.bits_per_vector == 20.0


def test_extreme_codebook_sizes() -> None:
    x = clustered(300, 8, seed=4)
    tiny = PQVAECodec(dim=8, num_subvectors=4, codebook_size=2, iterations=2).fit(x, progress=False)
    assert set(np.unique(tiny.encode(x))) == {0, 1}
    huge = PQVAECodec(dim=8, num_subvectors=1, codebook_size=65536, iterations=1).fit(x, progress=False)
    codes = huge.encode(x)
    assert codes.dtype == np.uint16
    # with far more codewords than vectors every vector should get (nearly) its own codeword
    assert np.mean(np.sum(huge.decode(codes) * x, axis=1)) > 0.99


def test_adc_equals_inner_product_with_linear_decoding(codec: PQVAECodec, data: np.ndarray) -> None:
    queries = np.random.default_rng(9).standard_normal((7, 48)).astype(np.float32)
    codes = codec.encode(data[:50]).astype(np.int64)
    sub = codec.query_transform(queries).reshape(7, codec.num_subvectors, codec.subvector_dim)
    luts = np.einsum("qmd,kd->qmk", sub, codec.codebook)
    adc = codec.query_offset(queries)[:, None] + sum(luts[:, m, codes[:, m]] for m in range(codec.num_subvectors))
    brute = queries @ codec.decode(codes, normalize=False).T
    np.testing.assert_allclose(adc, brute, rtol=1e-4, atol=1e-5)


def test_deterministic_for_a_seed(data: np.ndarray) -> None:
    a = PQVAECodec(dim=48, num_subvectors=4, codebook_size=16, iterations=2).fit(data, seed=5, progress=False)
    b = PQVAECodec(dim=48, num_subvectors=4, codebook_size=16, iterations=2).fit(data, seed=5, progress=False)
    assert a.content_hash == b.content_hash
    np.testing.assert_array_equal(a.encode(data), b.encode(data))


def test_save_load_gives_identical_codes(codec: PQVAECodec, data: np.ndarray, tmp_path) -> None:
    path = codec.save(tmp_path / "codec.safetensors")
    loaded = PQVAECodec.load(path)
    assert loaded.content_hash == codec.content_hash
    assert loaded.config == codec.config
    np.testing.assert_array_equal(loaded.encode(data), codec.encode(data))
    np.testing.assert_array_equal(loaded.decode(codec.encode(data[:4])), codec.decode(codec.encode(data[:4])))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "temp file left behind"


def test_corrupt_codec_files_are_rejected(codec: PQVAECodec) -> None:
    blob = bytearray(codec.to_bytes())
    with pytest.raises(ValueError):
        PQVAECodec.from_bytes(b"")
    with pytest.raises(ValueError):
        PQVAECodec.from_bytes(bytes(blob[: len(blob) // 2]))
    blob[-5] ^= 0xFF  # flip a weight byte: the content hash must catch it
    with pytest.raises(ValueError, match="hash"):
        PQVAECodec.from_bytes(bytes(blob))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((3, 47), np.float32),
        np.zeros((3, 48, 1), np.float32),
        np.array([[np.nan] * 48], np.float32),
        np.array([[np.inf] * 48], np.float32),
        np.array([["a"] * 48]),
    ],
)
def test_bad_vectors_raise_value_error(codec: PQVAECodec, bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        codec.encode(bad)


@pytest.mark.parametrize(
    "bad",
    [np.full((1, 8), 32), np.full((1, 8), -1), np.zeros((1, 7), np.int64), np.zeros((1, 8), np.float32) + 0.5],
)
def test_bad_codes_raise_value_error(codec: PQVAECodec, bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        codec.decode(bad)


def test_bad_configuration_raises_value_error() -> None:
    for kwargs in ({"codebook_size": 1}, {"codebook_size": 65537}, {"num_subvectors": 0}, {"dim": 0}):
        args = {"dim": 8, "num_subvectors": 2, "codebook_size": 16} | kwargs
        with pytest.raises(ValueError):
            PQVAECodec(**args)


def test_unfitted_codec_raises() -> None:
    with pytest.raises(CodecNotFittedError):
        PQVAECodec(dim=8, num_subvectors=2, codebook_size=4).encode(np.zeros((1, 8), np.float32))


@pytest.mark.parametrize("n", [2, 30, 200])
def test_small_training_sets(n: int) -> None:
    x = clustered(n, 64, seed=n)
    codec = PQVAECodec(dim=64, num_subvectors=8, codebook_size=256, iterations=3).fit(x, progress=False)
    assert codec.report is not None and codec.report.num_train_vectors == n
    assert f"{n} of {n} vectors" in codec.report.summary()
    codes = codec.encode(x)
    # codes are not collapsed: distinct vectors get distinct codes, and reconstructions are close
    assert len({row.tobytes() for row in codes}) == n
    assert np.mean(np.sum(codec.decode(codes) * x, axis=1)) > 0.95


def test_trained_codec_beats_random_codes_by_a_wide_margin() -> None:
    both = clustered(3500, 64, seed=1)
    train, test = both[:3000], both[3000:]
    codec = PQVAECodec(dim=64, num_subvectors=8, codebook_size=64, iterations=4).fit(train, progress=False)
    codes = codec.encode(test)
    random_codes = np.random.default_rng(0).integers(0, 64, size=codes.shape)

    def recall_at_10(decoded: np.ndarray) -> float:
        queries = test[:100]
        truth = np.argsort(-(queries @ test.T), axis=1)[:, :10]
        found = np.argsort(-(queries @ decoded.T), axis=1)[:, :10]
        return float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)]))

    trained, rand = recall_at_10(codec.decode(codes)), recall_at_10(codec.decode(random_codes))
    assert trained > 0.5
    assert trained > rand + 0.4
    cos = np.mean(np.sum(codec.decode(codes) * test, axis=1))
    assert cos > 0.9


def test_any_dimension() -> None:
    for dim in (5, 384, 1024):
        x = clustered(100, dim, seed=dim)
        codec = PQVAECodec(dim=dim, num_subvectors=4, codebook_size=8, iterations=1).fit(x, progress=False)
        assert codec.decode(codec.encode(x[:3])).shape == (3, dim)


def test_residual_quantizer_initialisation() -> None:
    both = clustered(700, 16, seed=7)
    train, test = both[:600], both[600:]
    codec = PQVAECodec(dim=16, num_subvectors=2, codebook_size=8, iterations=2, init="residual-quantizer")
    codec.fit(train, progress=False)
    baseline = PQVAECodec(dim=16, num_subvectors=2, codebook_size=8, iterations=2).fit(train, progress=False)

    def cosine(c: PQVAECodec) -> float:
        return float(np.mean(np.sum(c.decode(c.encode(test)) * test, axis=1)))

    assert cosine(codec) > 0.7
    assert cosine(codec) > cosine(baseline) - 0.05
    with pytest.raises(ValueError, match="init"):
        PQVAECodec(dim=16, num_subvectors=2, codebook_size=8, init="magic")


def _parallel_error(codec: PQVAECodec, x: np.ndarray) -> tuple[float, float]:
    """Mean squared error of the linear reconstruction along and across each item's direction."""
    err = x - codec.decode(codec.encode(x), normalize=False)
    along = np.einsum("nd,nd->n", err, x)
    return float(np.mean(along**2)), float(np.mean(np.sum(err * err, axis=1) - along**2))


def test_parallel_weight_moves_error_off_the_items_direction() -> None:
    both = clustered(2200, 32, seed=3)
    train, test = both[:2000], both[2000:]
    plain = PQVAECodec(dim=32, num_subvectors=4, codebook_size=32, iterations=3).fit(train, progress=False)
    scored = PQVAECodec(dim=32, num_subvectors=4, codebook_size=32, iterations=3, parallel_weight=8.0)
    scored.fit(train, progress=False)
    plain_along, plain_across = _parallel_error(plain, test)
    scored_along, scored_across = _parallel_error(scored, test)
    # the score-aware loss trades error across the item for error along it
    assert scored_along < 0.7 * plain_along
    assert scored_across > plain_across
    assert scored.report is not None and len(scored.report.held_out_error_history) == 4


def test_beam_search_matches_exhaustive_search_on_a_tiny_code() -> None:
    from itertools import product

    from semstore.codec.quantizer import beam_encode, reconstruct, stage_codebooks

    rng = np.random.default_rng(5)
    codebook = rng.standard_normal((4, 3)).astype(np.float32)
    blocks = rng.standard_normal((3, 6, 3)).astype(np.float32)
    books = stage_codebooks(codebook, blocks)
    y = rng.standard_normal((50, 6)).astype(np.float32)
    units = y / np.linalg.norm(y, axis=1, keepdims=True)
    every = np.array(list(product(range(4), repeat=3)))
    for weight in (1.0, 5.0):
        codes = beam_encode(y, codebook, blocks, beam_size=64, directions=units, parallel_weight=weight)
        for row, code in zip(y, codes):
            err = row - reconstruct(every, books)
            loss = np.sum(err * err, axis=1) + (weight - 1) * (err @ (row / np.linalg.norm(row))) ** 2
            # a beam as wide as the code space is exhaustive search: it must find the minimum
            assert np.isclose(loss[np.ravel_multi_index(code, (4, 4, 4))], loss.min(), rtol=1e-4, atol=1e-5)


def test_parallel_weight_is_validated_and_keeps_old_codec_versions() -> None:
    with pytest.raises(ValueError, match="parallel_weight"):
        PQVAECodec(dim=8, parallel_weight=0.5)
    # a codec saved before the option existed loads with its stored version (content hash)
    from pathlib import Path

    old = PQVAECodec.load(Path(__file__).parents[1] / "data" / "codec-format1-tiny.safetensors")
    assert old.config.parallel_weight == 1.0
    assert old.config.patience is None  # it ran every refinement iteration
    assert old.content_hash.startswith("ce84b4d48877")
    assert old.encode(np.ones((1, 16), np.float32)).shape == (1, 4)


def test_refinement_stops_once_the_held_out_error_stops_falling() -> None:
    # unstructured vectors, 4 x 64 codewords for 360 training vectors: the refinement overfits
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    full = PQVAECodec(dim=32, num_subvectors=4, codebook_size=64, iterations=8, patience=None).fit(x, seed=1, progress=False)
    assert full.report.iterations == 8
    assert full.report.best_iteration + 2 < 8  # the precondition: the best iterate comes early
    held = full.report.held_out_error_history
    assert held[full.report.best_iteration] == min(held)

    early = PQVAECodec(dim=32, num_subvectors=4, codebook_size=64, iterations=8, patience=2).fit(x, seed=1, progress=False)
    assert early.report.best_iteration == full.report.best_iteration
    assert early.report.iterations == early.report.best_iteration + 2
    assert early.report.held_out_error_history == held[: early.report.iterations + 1]
    # the same iterate is kept, so the codes are the same
    assert np.array_equal(early.encode(x), full.encode(x))
    with pytest.raises(ValueError, match="patience"):
        PQVAECodec(dim=8, patience=0)


def _mean_error(codec: PQVAECodec, vectors: np.ndarray, codes: np.ndarray) -> float:
    return float(np.mean(np.sum((vectors - codec.decode(codes, normalize=False)) ** 2, axis=1)))


def test_approximate_top_k_encodes_almost_as_well_as_exact_beam_search() -> None:
    from semstore.codec.quantizer import beam_encode

    data = clustered(1500, 32, seed=11)
    codec = PQVAECodec(dim=32, num_subvectors=8, codebook_size=64, iterations=1, beam_size=16).fit(
        data[:1000], progress=False
    )
    test = data[1000:]
    params = codec._require()
    targets = test - codec.mean
    exact = codec.encode(test, exact=True)
    approximate = beam_encode(targets, params["codebook"], params["blocks"], 16, exact_topk=False).astype(np.uint8)
    # approximate survivors change a few codes, never the quality of the codes as a whole
    assert (approximate == exact).all(axis=1).mean() > 0.8
    assert _mean_error(codec, test, approximate) <= 1.01 * _mean_error(codec, test, exact)
    # greedy encoding is exact either way
    greedy = beam_encode(targets, params["codebook"], params["blocks"], 1, exact_topk=False)
    assert np.array_equal(greedy, codec.encode(test, beam_size=1, exact=True))


def test_bfloat16_products_change_few_codes_and_not_their_quality() -> None:
    # forced on, whatever this CPU supports, so that the path is tested on every machine
    from semstore.codec.lut_search import LutBeamSearch

    data = clustered(1500, 48, seed=12)
    codec = PQVAECodec(dim=48, num_subvectors=8, codebook_size=64, iterations=1, beam_size=8).fit(
        data[:1000], progress=False
    )
    test = data[1000:]
    search = LutBeamSearch(codec._stage_books())
    targets = test - codec.mean
    exact = search.encode(targets, 8)
    rounded = search.encode(targets, 8, bfloat16_products=True)
    assert np.array_equal(exact, codec.encode(test, exact=True))
    assert (rounded == exact).all(axis=1).mean() > 0.5
    assert _mean_error(codec, test, rounded) <= 1.01 * _mean_error(codec, test, exact)


def test_lut_search_matches_numpy_beam_search_to_the_last_stage() -> None:
    # FAISS's step kernel with an argmin at the last stage against the numpy reference search
    from semstore.codec.lut_search import LutBeamSearch
    from semstore.codec.quantizer import _beam_chunk, _StageProducts, stage_codebooks

    rng = np.random.default_rng(3)
    for k_count in (16, 100, 512):  # any codebook size, not only powers of two up to 256
        codebook = rng.standard_normal((k_count, 6)).astype(np.float32)
        blocks = rng.standard_normal((5, 20, 6)).astype(np.float32) * np.linspace(1.0, 0.2, 5)[:, None, None].astype(np.float32)
        books = stage_codebooks(codebook, blocks)
        targets = rng.standard_normal((300, 20)).astype(np.float32) * 2.0
        norms = np.einsum("mkD,mkD->mk", books, books)
        assert LutBeamSearch.applies(5, k_count)
        for beam in (1, 3, 16, 40):
            reference = _beam_chunk(targets, None, _StageProducts(books, codebook, blocks), books, norms, beam, 1.0)
            np.testing.assert_array_equal(LutBeamSearch(books).encode(targets, beam), reference)
    assert not LutBeamSearch.applies(16, 1024)  # a 1 GB table: the numpy search runs instead


def test_query_parts_are_the_transform_and_offset_in_one_product() -> None:
    data = clustered(600, 24, seed=4)
    codec = PQVAECodec(dim=24, num_subvectors=4, codebook_size=16, iterations=0).fit(data, progress=False)
    queries = data[:7] * 3.0
    sub, offset = codec.query_parts(queries)
    # against the definition q'_m = P_m^T T^{-1} q, computed block by block
    params = codec._require()
    blocks = [(queries @ params["inverse_transform"]) @ block for block in params["blocks"]]
    np.testing.assert_allclose(sub, np.concatenate(blocks, axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(codec.query_transform(queries), sub)
    np.testing.assert_allclose(offset, codec.query_offset(queries), rtol=1e-5, atol=1e-5)
    assert sub.flags.c_contiguous and sub.dtype == np.float32 and offset.shape == (7,)
    with pytest.raises(ValueError, match="NaN"):
        codec.query_parts(np.full((1, 24), np.nan, np.float32))


@pytest.mark.parametrize("weighting", [0.0, 0.5])
def test_encode_searches_the_weighted_working_space(weighting: float) -> None:
    # encode codes y = T (x - mu), where T is the identity only without query weighting
    from semstore.codec.quantizer import beam_encode

    data = clustered(700, 24, seed=5)
    codec = PQVAECodec(dim=24, num_subvectors=4, codebook_size=16, iterations=1, query_weighting=weighting)
    codec.fit(data[:500], progress=False)
    params = codec._require()
    assert np.array_equal(params["transform"], np.eye(24, dtype=np.float32)) == (weighting == 0.0)
    targets = (data[500:] - params["mean"]) @ params["transform"]
    expected = beam_encode(targets, params["codebook"], params["blocks"], codec.config.beam_size, exact_topk=True)
    np.testing.assert_array_equal(codec.encode(data[500:], exact=True), expected)


def test_native_bfloat16_reads_the_cpu_flags(tmp_path: Path) -> None:
    from semstore.codec.lut_search import native_bfloat16

    with_bf16 = tmp_path / "bf16"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    without = tmp_path / "plain"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert native_bfloat16(str(with_bf16)) is True
    assert native_bfloat16(str(without)) is False
    assert native_bfloat16(str(tmp_path / "missing")) is False


# -- the fit report and the cost of training (issue 20) ------------------------------------------


def test_report_of_a_tiny_set_has_no_nan_and_a_bounded_revival_count() -> None:
    import json

    n, m_count, k_count = 56, 4, 256
    x = clustered(n, 32, seed=20)
    codec = PQVAECodec(dim=32, num_subvectors=m_count, codebook_size=k_count, iterations=4).fit(x, progress=False)
    report = codec.report
    # 56 vectors are too few to hold any out: the report says so instead of printing NaN
    assert report.held_out_vectors == 0
    assert report.held_out_error is None
    assert report.held_out_error_history == []
    text = report.summary()
    assert "nan" not in text.lower()
    assert "no held-out set" in text and "no early stopping" in text
    # revived counts distinct stage codewords: at most M * K in all and in every iteration
    assert report.stage_codewords == m_count * k_count
    assert 0 <= report.revived_codewords <= m_count * k_count
    assert len(report.revived_history) == report.iterations
    assert all(0 <= count <= m_count * k_count for count in report.revived_history)
    assert f"revived {report.revived_codewords} of {m_count * k_count}" in text
    # the report stored with the codec is strict JSON (no NaN)
    from semstore.codec.model import _read_metadata

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the stored report")

    stored = json.loads(_read_metadata(codec.to_bytes())["report"], parse_constant=refuse)
    assert stored["held_out_error_history"] == [] and stored["held_out_vectors"] == 0


def test_report_names_the_held_out_vectors_and_the_phases() -> None:
    x = clustered(400, 32, seed=21)
    codec = PQVAECodec(dim=32, num_subvectors=4, codebook_size=16, iterations=2, patience=None).fit(x, progress=False)
    report = codec.report
    assert report.held_out_vectors == 40
    assert isinstance(report.held_out_error, float) and report.held_out_error == min(report.held_out_error_history)
    assert f"held out {report.held_out_error:.4f} on 40 vectors" in report.summary()
    assert set(report.phase_seconds) >= {"initialisation", "codebook updates", "encoding"}
    assert sum(report.phase_seconds.values()) <= report.seconds + 0.01


def test_a_stage_revives_no_more_codewords_than_its_vectors_can_use() -> None:
    from semstore.codec.quantizer import update_stage_books

    rng = np.random.default_rng(0)
    m_count, k_count, dim = 3, 64, 8
    books = rng.standard_normal((m_count, k_count, dim)).astype(np.float32)
    for n in (5, 40, 200):
        targets = rng.standard_normal((n, dim)).astype(np.float32)
        codes = rng.integers(0, 4, size=(n, m_count))  # every vector in one of 4 codewords per stage
        _, revived = update_stage_books(targets, codes, books, np.random.default_rng(1))
        assert revived.shape == (m_count, k_count) and revived.dtype == bool
        used = np.array([np.unique(codes[:, m]).size for m in range(m_count)])
        # a used codeword is never revived; a dead one only while vectors share codewords
        for m in range(m_count):
            assert not revived[m, np.unique(codes[:, m])].any()
            assert revived[m].sum() == min(k_count - used[m], n - used[m])


def test_shared_factorisation_is_the_truncated_svd() -> None:
    from semstore.codec.quantizer import factor_shared, stage_codebooks

    rng = np.random.default_rng(2)
    for m_count, k_count, dim, rank in ((4, 64, 8, 16), (4, 64, 8, 64), (2, 300, 8, 12), (3, 32, 4, 32)):
        books = rng.standard_normal((m_count, k_count, dim)).astype(np.float32)
        codebook, blocks = factor_shared(books, rank)
        width = min(rank, k_count, m_count * dim)
        assert codebook.shape == (k_count, width) and blocks.shape == (m_count, dim, width)
        stacked = books.transpose(1, 0, 2).reshape(k_count, m_count * dim).astype(np.float64)
        u, s, vt = np.linalg.svd(stacked, full_matrices=False)
        best = ((u[:, :width] * s[:width]) @ vt[:width]).reshape(k_count, m_count, dim).transpose(1, 0, 2)
        np.testing.assert_allclose(stage_codebooks(codebook, blocks), best, rtol=1e-4, atol=1e-4)


class _CostCounter:
    """Counts the work of one fit: k-means budget of the initialisation, update rows, encoder stage calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import faiss

        import semstore.codec.quantizer as quantizer

        self.kmeans: list[dict[str, int]] = []
        self.update_rows = 0
        self.stage_calls = 0
        counter = self
        real_rq, real_group_sums, real_step = faiss.ResidualQuantizer, quantizer.group_sums, faiss.beam_search_encode_step_tab

        class CountingRQ(real_rq):  # type: ignore[misc, valid-type]
            def train(self, x: np.ndarray) -> None:
                counter.kmeans.append(
                    {"stages": self.M, "vectors": x.shape[0], "beam": self.max_beam_size, "niter": self.cp.niter,
                     "steps": self.cp.progressive_dim_steps, "points": self.cp.max_points_per_centroid * 32}
                )
                super().train(x)

        def group_sums(labels: np.ndarray, values: np.ndarray, groups: int):
            counter.update_rows += values.shape[0]
            return real_group_sums(labels, values, groups)

        def step(*args):
            counter.stage_calls += 1
            return real_step(*args)

        monkeypatch.setattr(faiss, "ResidualQuantizer", CountingRQ)
        monkeypatch.setattr(quantizer, "group_sums", group_sums)
        monkeypatch.setattr(faiss, "beam_search_encode_step_tab", step)


def test_training_work_grows_linearly_with_the_number_of_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered(900, 32, seed=22)
    per_code = []
    for m_count in (2, 4, 8):
        with monkeypatch.context() as patch:
            counter = _CostCounter(patch)
            codec = PQVAECodec(dim=32, num_subvectors=m_count, codebook_size=32, iterations=3, patience=None)
            codec.fit(x, progress=False)
        report = codec.report
        assert report.iterations == 3  # the number of refinement iterations does not grow with M
        (init,) = counter.kmeans
        assert init["stages"] == m_count
        # one k-means per stage, each on at most the same number of points whatever M is
        kmeans_points = min(init["vectors"] * init["beam"], init["points"]) * init["niter"] * init["steps"]
        n_train = report.num_train_vectors - report.held_out_vectors
        # 2 sweeps over the M stages per refinement iteration, each over the training vectors once
        assert counter.update_rows == report.iterations * 2 * m_count * n_train
        # every encode (train and held out, once per evaluation) steps through the M stages once
        encodes = (report.iterations + 1) * 2
        assert counter.stage_calls == encodes * m_count
        per_code.append((kmeans_points, counter.update_rows / m_count, counter.stage_calls / m_count))
    assert len(set(per_code)) == 1, per_code


def test_initialisation_options_are_validated_and_keep_old_codec_versions() -> None:
    for name in ("kmeans_points_per_centroid", "kmeans_progressive_steps"):
        with pytest.raises(ValueError, match=name):
            PQVAECodec(dim=8, **{name: 0})
    # a codec stored before the options existed was trained with FAISS's values (256, 10)
    old = PQVAECodec.load(Path(__file__).parents[1] / "data" / "codec-format1-tiny.safetensors")
    assert old.config.kmeans_points_per_centroid == 256 and old.config.kmeans_progressive_steps == 10
    assert "kmeans_progressive_steps" not in old.config.identity_dict()
    assert old.content_hash.startswith("ce84b4d48877")
    # new codecs name them in their identity
    assert PQVAECodec(dim=8).config.identity_dict()["kmeans_progressive_steps"] == 3
