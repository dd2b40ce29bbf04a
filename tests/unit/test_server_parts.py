"""Small pieces behind the HTTP server: key format, path confinement, rate limiter, upload URIs, host checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from semstore import apikeys
from semstore.uploads import upload_uri
from semstore.config import Settings
from semstore.ingest.roots import PathNotAllowedError, confine_paths
from server.app import InsecureSettingsError, check_settings, is_loopback
from server.auth import is_public
from server.limits import RateLimiter


def test_api_key_format_and_hash() -> None:
    key = apikeys.generate_api_key()
    assert apikeys.is_well_formed(key) and key != apikeys.generate_api_key()
    assert apikeys.hash_api_key(key) == apikeys.hash_api_key(key) and key not in apikeys.hash_api_key(key)
    for bad in ("", "ssk_", key[:-1], key + "x", "Bearer " + key, key.replace("ssk_", "xyz_"), key[:-1] + "\x00"):
        assert not apikeys.is_well_formed(bad)


def test_confine_paths(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "album").mkdir(parents=True)
    outside.mkdir()
    (root / "album" / "a.png").write_bytes(b"x")
    (outside / "b.png").write_bytes(b"x")
    os.symlink(outside / "b.png", root / "album" / "link.png")
    os.symlink(outside, root / "door")

    found = confine_paths([str(root / "album")], [root])
    assert [p.name for p in found.files] == ["a.png"]
    assert [(Path(f.source).name, f.reason) for f in found.refused] == [("b.png", "outside the allowed roots")]
    for bad, reason in [
        (str(outside / "b.png"), "outside"),
        (str(root / ".." / "outside" / "b.png"), "outside"),
        (str(root / "door" / "b.png"), "outside"),
        ("album/a.png", "absolute"),
        (str(root / "nope.png"), "no such"),
        (str(root) + "\x00/a.png", "NUL"),
    ]:
        with pytest.raises(PathNotAllowedError, match=reason):
            confine_paths([bad], [root])
    with pytest.raises(PathNotAllowedError, match="disabled"):
        confine_paths([str(root / "album")], [])
    with pytest.raises(PathNotAllowedError, match="more than 0 files"):
        confine_paths([str(root / "album")], [root], max_files=0)


def test_rate_limiter_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert [limiter.check("a"), limiter.check("a")] == [0, 0]
    assert limiter.check("a") == 30  # one token comes back every 30 s
    assert limiter.check("b") == 0  # per key
    now[0] = 30.0
    assert limiter.check("a") == 0 and limiter.check("a") > 0
    assert RateLimiter(0).check("a") == 0


def test_upload_uri_keeps_only_a_clean_base_name() -> None:
    uri = upload_uri("../../etc/pass\x00wd\\x.png", b"data")
    assert uri.startswith("upload://") and uri.endswith("/x.png") and ".." not in uri and "\x00" not in uri
    assert upload_uri("", b"data").endswith("/image")


def test_keys_cannot_be_disabled_off_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")
    check_settings(Settings(api_keys_disabled=True, host="127.0.0.1"))
    check_settings(Settings(api_keys_disabled=False, host="0.0.0.0"))
    with pytest.raises(InsecureSettingsError):
        check_settings(Settings(api_keys_disabled=True, host="0.0.0.0"))


def test_public_paths() -> None:
    assert is_public("/health") and is_public("/") and is_public("/static/app.js")
    assert not is_public("/metrics") and not is_public("/v1/collections") and not is_public("/static")


class _CountingEncoder:
    """A real (tiny) encoder that records the size of every text batch it is given."""

    def __init__(self) -> None:
        from semstore.encoders import TINY_TEST_MODEL, OpenClipEncoder

        self.inner = OpenClipEncoder(TINY_TEST_MODEL, None)
        self.batches: list[int] = []

    def encode_texts(self, texts: list[str]):  # noqa: ANN201 - numpy array
        self.batches.append(len(texts))
        return self.inner.encode_texts(texts)


def test_text_batcher_embeds_concurrent_queries_together() -> None:
    import asyncio

    import anyio
    import numpy as np

    from server.batching import TextBatcher

    encoder = _CountingEncoder()
    texts = [f"query number {i}" for i in range(10)]
    expected = encoder.inner.encode_texts(texts)

    async def main() -> list[np.ndarray]:
        batcher = TextBatcher(anyio.CapacityLimiter(1), max_batch=4, max_wait_s=0.05)
        return await asyncio.gather(*(batcher.encode(encoder, text) for text in texts))  # type: ignore[arg-type]

    results = asyncio.run(main())
    assert encoder.batches == [4, 4, 2]
    for row, result in enumerate(results):
        assert result.shape == (1, expected.shape[1])
        np.testing.assert_allclose(result[0], expected[row], atol=1e-5)


def test_settings_as_environment_round_trips(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from semstore.config import Settings

    settings = Settings(
        data_dir=tmp_path, database_url="sqlite:///x.db", pretrained=None, cors_origins=["http://a", "http://b"],
        threads=1, index_kind="ivf",
    )  # fmt: skip
    env = settings.as_environment()
    assert env["SEMSTORE_PRETRAINED"] == "" and env["SEMSTORE_INDEX_KIND"] == "ivf"
    for key in [k for k in __import__("os").environ if k.startswith("SEMSTORE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings


def test_ingest_threads_run_at_a_lower_priority() -> None:
    import asyncio
    import os
    import sys
    import threading

    import pytest

    from server.ingest_threads import INGEST_NICENESS, IngestThreads

    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread priorities are a Linux feature")
    pool = IngestThreads(1)
    try:
        def niceness() -> int:
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        mine = niceness()
        theirs = asyncio.run(pool.run(niceness))
        assert theirs == min(mine + INGEST_NICENESS, 19)
        assert niceness() == mine  # the caller's own priority is untouched
    finally:
        pool.shutdown()
