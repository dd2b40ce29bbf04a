"""bench/search_path.py at a tiny size: fill, filters of known selectivity, in-process timing, report.

SQLite only, no server (the HTTP part is exercised by ``python bench/search_path.py --quick``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not installed

from bench import search_path  # noqa: E402

ITEMS = 3_000


def test_parse_args_defaults_and_quick() -> None:
    assert search_path.parse_args([]).items == search_path.DEFAULT_ITEMS == 1_000_000
    quick = search_path.parse_args(["--quick"])
    assert quick.items == search_path.QUICK_ITEMS and quick.queries == 100 and quick.http_queries == 200
    assert search_path.parse_args(["--items", "10000000"]).items == 10_000_000
    with pytest.raises(SystemExit):
        search_path.parse_args(["--items", "0"])
    with pytest.raises(SystemExit):
        search_path.parse_args(["--http-queries", "2", "--blocks", "4"])


def test_metadata_gives_the_stated_selectivities() -> None:
    n = 1_234
    counted = {label: 0 for label in search_path.FILTERS}
    for i in range(n):
        meta = search_path.item_metadata(i) or {}
        for label, (where, _) in search_path.FILTERS.items():
            counted[label] += all(meta.get(k) == v for k, v in where.items())
    assert counted == search_path.expected_matching(n)
    for label, (_, fraction) in search_path.FILTERS.items():
        assert abs(counted[label] / n - fraction) < 0.01


def test_building_blocks_on_sqlite(tmp_path: Path) -> None:
    import semstore
    from semstore.encoders import TINY_TEST_MODEL, OpenClipEncoder

    encoder = OpenClipEncoder(TINY_TEST_MODEL, None, threads=1, batch_size=32)
    with search_path.one_thread():
        codec, seconds = search_path.train_codec(encoder.dim, train_size=1_000)
    assert codec.num_subvectors == 16 and codec.codebook_size == 256 and codec.bytes_per_vector == 16 and seconds > 0

    with search_path.sqlite_backend(tmp_path) as backend:
        settings = search_path.make_settings(backend.url, backend.data_dir)
        assert settings.api_keys_disabled and settings.rate_limit_per_minute == 0 and settings.model == TINY_TEST_MODEL
        env = search_path.server_env(search_path.make_settings(backend.url, backend.data_dir, port=8123))
        assert env["SEMSTORE_PORT"] == "8123" and env["SEMSTORE_PRETRAINED"] == "" and env["SEMSTORE_API_KEYS_DISABLED"] == "True"

        db = semstore.connect(backend.url, settings=settings, encoder_factory=lambda _m, _p: encoder)
        try:
            collection = db.create_collection(search_path.COLLECTION_NAME, model=TINY_TEST_MODEL, codec=codec)
            result = search_path.BackendResult(backend.name, items=ITEMS)
            result.fill_s = search_path.fill(db, collection, ITEMS, batch=1_000, progress=False)
            result.disk_bytes, result.disk_what = search_path.disk_bytes(db)
            assert result.fill_per_s > 0 and result.disk_bytes > 16 * ITEMS

            queries = search_path.unit_vectors(12, codec.dim, seed=1)
            assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
            index = search_path.run_in_process(db, collection, result, queries, warmup=2, profile="all")
        finally:
            db.close()
        assert backend.data_dir.exists()
    assert not backend.data_dir.exists()  # the SQLite scratch folder is removed

    assert len(index) == ITEMS and result.ram_bytes_per_item >= 16
    assert result.matching == search_path.expected_matching(ITEMS)
    assert result.hits == {"0 %": 0, "1 %": 10, "50 %": 10}
    expected_cases = {"raw", "collection", "freshness", "rows", *(f"filter {label}" for label in search_path.FILTERS)}
    assert set(result.latency) == expected_cases
    assert all(lat.count == len(queries) and 0 < lat.p50 <= lat.p99 for lat in result.latency.values())
    assert set(result.profiles) == expected_cases and "search_vector" in result.profiles["collection"]
    assert search_path.ratio(result, "collection", "raw") > 0

    args = search_path.parse_args(["--items", str(ITEMS), "--no-server", "--queries", "12"])
    context = {
        "started": "now", "elapsed": 1.0, "command": "python bench/search_path.py", "cpu": "cpu", "machine": "m",
        "git": "abc", "others": [], "dim": codec.dim, "codec_s": seconds, "code_bytes": 16, "layout": "pq",
    }
    report = search_path.format_report([result], args, context)
    assert "| `Collection.search_vector(q, k=10)` |" in report and "filtered `search_vector`, 1 % match" in report
    assert "HTTP search" not in report.split("## Results")[1].split("| fact |")[0]  # no server rows without a server
    assert f"| items N | {ITEMS:,} |" in report and "## Profiles" in report

    out = tmp_path / "results.md"
    search_path.write_report(report, out)
    out.write_text(out.read_text() + "my notes\n")
    search_path.write_report(report.replace("N = ", "N == "), out)
    text = out.read_text()
    assert "N == " in text and text.count(search_path.KEEP_MARKER) == 1 and text.endswith("my notes\n")
