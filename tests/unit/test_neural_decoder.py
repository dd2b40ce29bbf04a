"""Unit tests of the neural re-rank decoder (semstore.codec.neural) and its place in the codec."""

from __future__ import annotations

import numpy as np
import pytest

from semstore.codec import PQVAECodec
from semstore.codec.neural import NeuralDecoder, NeuralDecoderConfig, fit_neural_decoder
from semstore.index import ADCIndex

SMALL = NeuralDecoderConfig(hidden=64, blocks=1, epochs=25, batch_size=64, patience=25, threads=1)


def curved(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors on a curved low-dimensional surface: a sum of codewords explains them
    only roughly, so a decoder that sees all codes at once has something to learn."""
    rng = np.random.default_rng(seed)
    latent = rng.uniform(-1.5, 1.5, size=(n, 3))
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    features = np.concatenate([latent, np.sin(2 * latent), np.cos(3 * latent), latent[:, :1] * latent[:, 1:]], axis=1)
    x = features @ basis[: features.shape[1]] + 0.02 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return curved(3000, 32)


@pytest.fixture(scope="module")
def codec(data: np.ndarray) -> PQVAECodec:
    codec = PQVAECodec(dim=32, num_subvectors=4, codebook_size=16, iterations=2, neural_config=SMALL)
    codec.fit(data[:2500], seed=0, progress=False)
    codec.fit_neural_decoder(data[:2500], seed=0)
    return codec


def _relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(((approx - exact) ** 2).sum() / (exact**2).sum())


def test_the_decoder_beats_the_linear_one_on_vectors_it_never_saw(codec: PQVAECodec, data: np.ndarray) -> None:
    report = codec.neural_report
    assert report is not None and report.best_epoch > 0
    assert report.held_out_error < report.linear_held_out_error
    unseen = data[2500:]
    codes = codec.encode(unseen)
    linear = _relative_error(codec.decode(codes, normalize=False), unseen)
    neural = _relative_error(codec.refined_decode(codes, normalize=False), unseen)
    assert neural < 0.9 * linear, (neural, linear)


def test_the_output_is_the_same_after_save_and_load(codec: PQVAECodec, data: np.ndarray, tmp_path) -> None:
    codes = codec.encode(data[:50])
    loaded = PQVAECodec.load(codec.save(tmp_path / "codec.safetensors"))
    assert loaded.neural_decoder is not None
    assert loaded.neural_decoder.content_hash == codec.neural_decoder.content_hash
    np.testing.assert_array_equal(loaded.refined_decode(codes), codec.refined_decode(codes))
    np.testing.assert_array_equal(loaded.encode(data[:50]), codes)
    assert loaded.content_hash == codec.content_hash


def test_numpy_decoding_equals_the_torch_model_it_was_trained_as(data: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    from semstore.codec.neural import _TorchDecoder

    config = NeuralDecoderConfig(hidden=16, blocks=2)
    torch.manual_seed(1)
    model = _TorchDecoder(32, 4, 16, config)
    with torch.no_grad():  # non-zero output weights, so the whole network matters
        model.w_out.weight.normal_(std=0.1)
        model.norm_out.weight.normal_(std=1.0)
    codes = np.random.default_rng(0).integers(0, 16, size=(40, 4))
    linear = data[:40]
    offsets = torch.arange(4) * 16
    with torch.no_grad():
        expected = model(torch.from_numpy(codes) + offsets, torch.from_numpy(linear)).numpy()
    got = NeuralDecoder(model.export(), config).refine(codes, linear)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, linear)


def test_a_codec_file_without_the_neural_part_keeps_working(data: np.ndarray) -> None:
    plain = PQVAECodec(dim=32, num_subvectors=4, codebook_size=16, iterations=1).fit(data[:800], progress=False)
    loaded = PQVAECodec.from_bytes(plain.to_bytes())
    assert loaded.neural_decoder is None
    codes = loaded.encode(data[:20])
    np.testing.assert_array_equal(loaded.refined_decode(codes), loaded.decode(codes))


def test_adding_a_decoder_changes_no_code_and_not_the_codec_version(data: np.ndarray) -> None:
    plain = PQVAECodec(dim=32, num_subvectors=4, codebook_size=16, iterations=1).fit(data[:800], progress=False)
    version, codes = plain.content_hash, plain.encode(data[:100])
    plain.fit_neural_decoder(data[:800], NeuralDecoderConfig(hidden=16, blocks=1, epochs=2, threads=1))
    assert plain.content_hash == version
    np.testing.assert_array_equal(plain.encode(data[:100]), codes)
    assert PQVAECodec.from_bytes(plain.to_bytes()).content_hash == version


def test_a_tampered_decoder_is_refused(codec: PQVAECodec) -> None:
    from safetensors.numpy import load, save

    from semstore.codec.model import _read_metadata

    data = codec.to_bytes()
    tensors, metadata = load(data), _read_metadata(data)
    tensors["neural.b_out"] = tensors["neural.b_out"] + 1.0
    with pytest.raises(ValueError, match="neural decoder"):
        PQVAECodec.from_bytes(save(tensors, metadata=metadata))


def test_rerank_changes_only_the_order_of_the_adc_candidates(codec: PQVAECodec, data: np.ndarray) -> None:
    index = ADCIndex(codec)
    index.add(np.arange(len(data)), codec.encode(data))
    queries = curved(5, 32, seed=7)
    depth = 40
    adc_scores, adc_ids = index.search(queries, depth)
    reranked_scores, reranked_ids = index.search(queries, depth, rerank=depth)
    for row in range(len(queries)):
        assert set(reranked_ids[row]) == set(adc_ids[row])
    assert not np.array_equal(reranked_ids, adc_ids)  # the neural scores did reorder them
    refined = codec.refined_decode(index.codes_for(reranked_ids[0]))
    unit = queries[0] / np.linalg.norm(queries[0])
    np.testing.assert_allclose(reranked_scores[0], refined @ unit, rtol=1e-5, atol=1e-6)


def test_noise_the_codes_cannot_explain_is_not_learnt() -> None:
    """Targets = linear reconstruction + noise independent of the codes: whatever a network
    fits on the training part, the held-out split refuses it and the linear decoder is kept."""
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 8, size=(600, 3))
    linear = rng.standard_normal((600, 12)).astype(np.float32)
    targets = linear + rng.standard_normal((600, 12)).astype(np.float32)
    config = NeuralDecoderConfig(hidden=128, blocks=2, epochs=15, batch_size=32, learning_rate=1e-2, patience=15, threads=1)
    decoder, report = fit_neural_decoder(targets, codes, linear, 8, config, seed=0)
    assert report.best_epoch == 0 and report.held_out_error == report.linear_held_out_error
    assert min(report.held_out_history) >= report.linear_held_out_error
    np.testing.assert_array_equal(decoder.refine(codes, linear), linear)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        NeuralDecoderConfig(holdout=0.0)
    with pytest.raises(ValueError):
        NeuralDecoderConfig(hidden=0)
    with pytest.raises(ValueError, match="at least 20"):
        fit_neural_decoder(np.zeros((5, 4), np.float32), np.zeros((5, 2), np.int64), np.zeros((5, 4), np.float32), 4)


def test_folding_the_input_layer_into_tables_computes_the_same_function(codec: PQVAECodec, data: np.ndarray) -> None:
    codes = codec.validate_codes(codec.encode(data[:64]))
    linear = codec.decode(codes, normalize=False)
    bound = codec.neural_decoder
    assert bound is not None
    unbound = NeuralDecoder(bound.params, bound.config)
    np.testing.assert_allclose(bound.refine(codes, linear), unbound.refine(codes, linear), rtol=1e-4, atol=1e-5)
    assert bound.flops_per_vector < unbound.flops_per_vector


def test_a_codec_fitted_on_too_few_vectors_for_a_decoder_is_still_fitted(data: np.ndarray) -> None:
    tiny = PQVAECodec(dim=32, num_subvectors=2, codebook_size=4, iterations=1, neural_decoder=True)
    tiny.fit(data[:10], progress=False)
    assert tiny.is_fitted and tiny.neural_decoder is None and tiny.neural_report is None
    assert tiny.encode(data[:3]).shape == (3, 2)
