"""bench/encode_speed.py on a tiny synthetic set: codec cache, per-beam quality, report."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not installed

from bench import encode_speed  # noqa: E402
from bench.datasets import make_synthetic_clip_like  # noqa: E402
from semstore.codec import PQVAECodec  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return make_synthetic_clip_like(600, 150, dim=32, latent_dim=8, n_classes=4, seed=0)


def test_fitted_codec_is_cached_by_data_and_config(data, tmp_path: Path) -> None:
    codec, fit_s = encode_speed.fitted_codec(data, 16, seed=0, cache=tmp_path)
    assert fit_s is not None and codec.num_subvectors == 2 and codec.codebook_size == 256
    again, again_s = encode_speed.fitted_codec(data, 16, seed=0, cache=tmp_path)
    assert again_s is None  # loaded, not refitted
    assert again.content_hash == codec.content_hash
    other_seed = encode_speed.codec_cache_path(data, PQVAECodec(dim=32, num_subvectors=2), seed=1, cache=tmp_path)
    other_data = encode_speed.codec_cache_path(replace(data, train=data.train[::-1].copy()),
                                               PQVAECodec(dim=32, num_subvectors=2), seed=0, cache=tmp_path)
    paths = {encode_speed.codec_cache_path(data, codec, seed=0, cache=tmp_path), other_seed, other_data}
    assert len(paths) == 3


def test_bits_must_fit_whole_bytes(data, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="multiple of 8"):
        encode_speed.fitted_codec(data, 12, seed=0, cache=tmp_path)


def test_wider_beams_do_not_code_worse_and_the_report_names_the_default(data, tmp_path: Path) -> None:
    codec, _ = encode_speed.fitted_codec(data, 16, seed=0, cache=tmp_path)
    rows = encode_speed.measure(codec, data, [1, 8], repeats=1)
    greedy, beam = rows
    assert 0.0 < beam.relative_error <= greedy.relative_error + 1e-6
    assert 0.0 < greedy.recall10 <= 1.0 and 0.0 <= beam.paired_r1 <= beam.paired_r10 <= 1.0
    assert greedy.approx_vps > 0 and greedy.exact_vps > 0
    report = encode_speed.format_report(rows, codec, data, threads=1, fit_s=1.0, n_vectors=750)
    default = codec.config.beam_size
    assert ("(default)" in report) == (default in (1, 8))
    assert "| 1 |" in report and "| 8" in report


def test_parse_args_rejects_bad_values() -> None:
    with pytest.raises(SystemExit):
        encode_speed.parse_args(["--beams", "0"])
    assert encode_speed.parse_args(["--quick"]).beams == [1, 4, 8, 16]
