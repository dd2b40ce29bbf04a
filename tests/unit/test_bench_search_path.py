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

        result = search_path.BackendResult(backend.name, items=ITEMS)
        queries = search_path.unit_vectors(12, codec.dim, seed=1)
        assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
        for position, setting in enumerate(["exhaustive", "auto", "ivf"]):
            kind_settings = search_path.make_settings(backend.url, backend.data_dir / setting, index_kind=setting)
            db = semstore.connect(backend.url, settings=kind_settings, encoder_factory=lambda _m, _p: encoder)
            try:
                if position == 0:
                    collection = db.create_collection(search_path.COLLECTION_NAME, model=TINY_TEST_MODEL, codec=codec)
                    result.fill_s = search_path.fill(db, collection, ITEMS, batch=1_000, progress=False)
                    result.disk_bytes, result.disk_what = search_path.disk_bytes(db)
                    assert search_path.analyze_after_fill(db) is None  # PostgreSQL only
                else:
                    collection = db.collection(search_path.COLLECTION_NAME)
                index = search_path.run_in_process(
                    db, collection, result, queries, warmup=2, profile="all" if setting == "exhaustive" else "none", setting=setting
                )
            finally:
                db.close()
            assert len(index) == ITEMS
        assert result.fill_per_s > 0 and result.disk_bytes > 16 * ITEMS
        assert backend.data_dir.exists()
    assert not backend.data_dir.exists()  # the SQLite scratch folder is removed

    kinds = result.kinds
    assert kinds["exhaustive"].kind.startswith("adc") and kinds["exhaustive"].ram_bytes_per_item >= 16
    assert kinds["auto"].same_as == "exhaustive"  # auto is exhaustive at this size: not timed twice
    assert kinds["ivf"].kind == "ivf" and kinds["ivf"].nlist and kinds["ivf"].same_as is None
    assert result.matching == search_path.expected_matching(ITEMS)
    for setting in ("exhaustive", "ivf"):
        assert [result.hits[f"{setting}/{label}"] for label in search_path.FILTERS] == [0, 10, 10]
    cases = {"raw", "collection", "rows", *(f"filter {label}" for label in search_path.FILTERS),
             *(f"filter {label} {when}" for label in search_path.COLD_FILTERS for when in ("cold", "new"))}
    assert set(result.latency) == {f"{s}/{c}" for s in ("exhaustive", "ivf") for c in cases}
    assert all(lat.count == len(queries) and 0 < lat.p50 <= lat.p99 for lat in result.latency.values())
    assert set(result.profiles) == {f"exhaustive/{c}" for c in cases}
    assert "search_vector" in result.profiles["exhaustive/collection"]
    assert search_path.ratio(result, "ivf/collection", "ivf/raw") > 0

    args = search_path.parse_args(["--items", str(ITEMS), "--no-server", "--queries", "12"])
    context = {
        "started": "now", "elapsed": 1.0, "command": "python bench/search_path.py", "cpu": "cpu", "machine": "m",
        "git": "abc", "others": [], "dim": codec.dim, "codec_s": seconds, "code_bytes": 16, "layout": "pq",
    }
    report = search_path.format_report([result], args, context)
    assert "| `Collection.search_vector(q, k=10)` |" in report and "filtered `search_vector`, 1 % match" in report
    assert "**index_kind=ivf: ivf, nlist" in report and "(the same index as index_kind=exhaustive: not timed again)" in report
    assert "HTTP search" not in report.split("## Results")[1].split("| fact |")[0]  # no server rows without a server
    assert f"| items N | {ITEMS:,} |" in report and "## Profiles" in report

    out = tmp_path / "results.md"
    search_path.write_report(report, out)
    out.write_text(out.read_text() + "my notes\n")
    search_path.write_report(report.replace("N = ", "N == "), out)
    text = out.read_text()
    assert "N == " in text and text.count(search_path.KEEP_MARKER) == 1 and text.endswith("my notes\n")
