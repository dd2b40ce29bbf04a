"""Search-path benchmark (issue #15): what a user's search costs at N stored items, SQLite and PostgreSQL.

For each backend, in one run and one process (plus the real server as a second one):

1. **Fill** N items fast: one codec (16 sub-vectors x 8 bits: 16-byte codes) trained once on a
   few thousand random vectors (k-means init, no refinement: timing, not quality), then
   ``storage.add_items`` in transactions of 20,000 rows with random codes (the FAISS ADC scan
   costs the same whatever the code values) and metadata of known selectivity: ``{"p1": true}``
   on 1 % of the items, ``{"p50": true}`` on 50 %, and ``{"p0": true}`` on none. The
   collection uses the tiny test model (``semstore-tiny-test``, random weights, 64-d), so the
   server can ingest uploads into it; the search cost does not depend on the weights.
2. **In process**, one thread (FAISS OpenMP, torch and BLAS), over random unit query vectors
   after a warm-up, interleaved query by query (so load changes hit every case alike):
   ``Collection.search_vector(q, k=10)`` (the user's path, default rerank 100) against the raw
   ``collection.index.search(q, 10, rerank=100)``, and filtered ``search_vector`` at 0 %, 1 %
   and 50 % selectivity against the unfiltered one (0 % and 1 % also with the collection's
   remembered matching ids cleared before every search, as after a write, and with its
   remembered match count cleared too, as a first use of a filter); plus the
   user's path's one SQL statement timed alone (hit rows with the revision). Bytes per item in RAM (``index.bytes_per_item``) and
   on disk (SQLite file / N; PostgreSQL ``pg_total_relation_size`` of ``items`` and ``item_metadata`` / N).
3. **HTTP**: ``python -m server`` (the production entry, settings from ``SEMSTORE_*``, API keys
   disabled on loopback, rate limits off) on the same database; from this process,
   sequential ``POST /v1/collections/{name}/search`` with ``{"item_id": ...}`` queries (no text
   encoder in the way; text queries with the tiny model are reported too), idle and while a
   second process uploads generated PNGs continuously (``POST .../items``), in alternating
   blocks (idle, uploading, idle, ...) so both conditions see the same machine load.
4. A table (printed, and written with the command and machine facts to
   ``bench/search_path_results.md``); for each missed target a cProfile of the case.

Usage::

    python bench/search_path.py --quick                 # 20,000 items, both backends
    python bench/search_path.py                         # 1,000,000 items
    python bench/search_path.py --items 10000000        # 10^7 (long fill)
    python bench/search_path.py --backends sqlite --no-server --items 100000

PostgreSQL: ``--postgres URL`` (default ``SEMSTORE_TEST_PG_URL`` or the local test server) is
only used to create, and afterwards drop, a scratch database for the run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import os
import pstats
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

from bench.report import limit_threads, load_average, machine_facts  # noqa: E402
from semstore import storage  # noqa: E402
from semstore.codec import PQVAECodec  # noqa: E402
from semstore.collection import DEFAULT_RERANK, Collection  # noqa: E402
from semstore.config import Settings  # noqa: E402
from semstore.encoders import TINY_TEST_MODEL  # noqa: E402
from semstore.filter_cache import filter_key  # noqa: E402
from semstore.search import hits_from_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("search_path_results.md")
#: Text from this line on in the results file is kept when the report is rewritten.
KEEP_MARKER = "<!-- hand-written notes below: kept when bench/search_path.py rewrites this file -->"

K = 10
RERANK = DEFAULT_RERANK
NUM_SUBVECTORS = 16
CODEBOOK_SIZE = 256
DEFAULT_ITEMS = 1_000_000
QUICK_ITEMS = 20_000
FILL_BATCH = 20_000
COLLECTION_NAME = "bench"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

#: label -> (where filter, fraction of items that match it); see :func:`item_metadata`.
FILTERS: dict[str, tuple[dict[str, bool], float]] = {
    "0 %": ({"p0": True}, 0.0),
    "1 %": ({"p1": True}, 0.01),
    "50 %": ({"p50": True}, 0.5),
}

#: Filters whose matching ids a collection remembers (the looked-up path): also timed with
#: the memory cleared before every search.
COLD_FILTERS = ("0 %", "1 %")

TARGET_COLLECTION_RATIO = 1.3  # Collection.search_vector / raw index search (p50)
TARGET_FILTER_RATIO = 3.0  # filtered / unfiltered search_vector (p50), every selectivity
TARGET_UPLOAD_RATIO = 2.0  # HTTP search p99 during uploads / idle
TARGET_HTTP_P99_MS = 40.0  # HTTP search p99 at 10^6


# --------------------------------------------------------------------------- measurements


@dataclass
class Latency:
    """Wall times of one series, in seconds (percentiles: numpy's linear interpolation)."""

    samples: np.ndarray

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latency:
        return cls(np.asarray(samples, dtype=np.float64))

    def ms(self, q: float) -> float:
        return float(np.percentile(self.samples, q) * 1000.0) if len(self.samples) else float("nan")

    @property
    def p50(self) -> float:
        return self.ms(50)

    @property
    def p99(self) -> float:
        return self.ms(99)

    @property
    def count(self) -> int:
        return len(self.samples)


@dataclass
class KindInfo:
    """The index one ``index_kind`` setting gave (cases of that setting are keyed ``"<setting>/<case>"``)."""

    setting: str  # the index_kind setting: exhaustive / ivf / auto
    kind: str  # what the index service built: adc-pq, ivf, ...
    nlist: int | None
    nprobe: int | None
    build_s: float
    ram_bytes_per_item: float
    same_as: str | None = None  # another setting that gave the same index (measured once, there)
    metadata_bytes_per_item: float = 0.0  # the metadata columns held beside the index
    metadata_keys: tuple[str, ...] = ()
    metadata_load_s: float = 0.0

    @property
    def label(self) -> str:
        built = self.kind + (f", nlist {self.nlist}, nprobe {self.nprobe}" if self.nlist else "")
        return f"index_kind={self.setting}: {built}"


@dataclass
class BackendResult:
    """Everything measured on one backend."""

    name: str
    items: int = 0
    fill_s: float = 0.0
    kinds: dict[str, KindInfo] = field(default_factory=dict)
    server_index: dict[str, str] = field(default_factory=dict)  # when -> the server's index (GET /v1/collections/...)
    code_bytes: int = 0
    disk_bytes: int = 0
    disk_what: str = ""
    matching: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    latency: dict[str, Latency] = field(default_factory=dict)
    server_timing: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    server_start_s: float | None = None
    upload_images: int = 0
    upload_requests: int = 0
    upload_failures: int = 0
    upload_seconds: float = 0.0
    server_errors: list[str] = field(default_factory=list)
    loads: dict[str, str] = field(default_factory=dict)
    others: dict[str, list[str]] = field(default_factory=dict)  # phase -> busy processes not of this run
    profiles: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def fill_per_s(self) -> float:
        return self.items / self.fill_s if self.fill_s else float("nan")


def one_thread() -> AbstractContextManager[None]:
    """FAISS OpenMP, torch intra-op and BLAS threads limited to one together."""
    return limit_threads(1, torch=True)


def round_robin(
    cases: Mapping[str, Callable[[np.ndarray], object]], queries: np.ndarray, *, warmup: int
) -> dict[str, Latency]:
    """Time every case on every query, the cases interleaved query by query, after ``warmup`` untimed rounds."""
    for i in range(warmup):
        for run in cases.values():
            run(queries[i % len(queries)][None, :])
    times: dict[str, list[float]] = {name: [] for name in cases}
    for q in queries:
        vector = q[None, :]
        for name, run in cases.items():
            t0 = time.perf_counter()
            run(vector)
            times[name].append(time.perf_counter() - t0)
    return {name: Latency.of(values) for name, values in times.items()}


def profile_text(run: Callable[[np.ndarray], object], queries: np.ndarray, *, top: int = 14) -> str:
    """cProfile of ``run`` over ``queries``: the top functions by own time, then by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for q in queries:
        run(q[None, :])
    profiler.disable()
    parts = []
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats(key).print_stats(top)
        text = out.getvalue()
        start = text.find("   ncalls")
        parts.append(f"by {key} ({len(queries)} calls):\n" + (text[start:] if start >= 0 else text).rstrip())
    return "\n\n".join(parts).replace(str(REPO) + "/", "").replace(str(Path(sys.prefix)) + "/", "")


# --------------------------------------------------------------------------- data


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def train_codec(dim: int, *, train_size: int = 4000, seed: int = 0) -> tuple[PQVAECodec, float]:
    """A 16 x 8-bit codec fitted quickly (k-means init, no refinement, greedy encoding); and seconds."""
    t0 = time.perf_counter()
    codec = PQVAECodec(
        dim=dim, num_subvectors=NUM_SUBVECTORS, codebook_size=CODEBOOK_SIZE,
        iterations=0, kmeans_iterations=4, beam_size=1, init="kmeans",
    ).fit(unit_vectors(train_size, dim, seed), seed=seed, progress=False)
    return codec, time.perf_counter() - t0


def item_metadata(i: int) -> dict[str, bool] | None:
    """Metadata of the ``i``-th filled item: ``p1`` on every 100th (1 %), ``p50`` on odd ones (50 %)."""
    if i % 100 == 0:
        return {"p1": True}
    if i % 2 == 1:
        return {"p50": True}
    return None


def expected_matching(n: int) -> dict[str, int]:
    """How many of ``n`` filled items each filter of :data:`FILTERS` matches."""
    return {"0 %": 0, "1 %": (n + 99) // 100, "50 %": n // 2}


def fill(
    db: Any, collection: Collection, n: int, *, batch: int = FILL_BATCH, seed: int = 0, progress: bool = True
) -> float:
    """Write ``n`` items with random codes straight through ``storage.add_items``; returns seconds."""
    codec = collection.codec
    assert codec is not None
    with db.sessions() as session:
        codec_id = storage.get_collection_by_id(session, collection_id=collection.id).codec_id
    rng = np.random.default_rng([seed, 7])
    t0 = time.perf_counter()
    reported = 0
    for start in range(0, n, batch):
        count = min(batch, n - start)
        codes = storage.pack_codes(rng.integers(0, codec.codebook_size, (count, codec.num_subvectors), dtype=codec.code_dtype))
        items = [
            storage.NewItem(
                source_uri=f"bench://item/{i}", content_hash=f"{i:032x}", codes=codes[i - start],
                codec_id=codec_id, metadata=item_metadata(i),
            )
            for i in range(start, start + count)
        ]
        with storage.transaction(db.sessions) as session:
            storage.add_items(session, collection_id=collection.id, items=items)
        done = start + count
        if progress and (done - reported >= 100_000 or done == n):
            reported = done
            spent = time.perf_counter() - t0
            print(f"    filled {done:,} / {n:,} items in {spent:.0f}s ({done / spent:,.0f}/s)", flush=True)
    return time.perf_counter() - t0


def filter_matches(db: Any, collection: Collection) -> dict[str, int]:
    """How many items each filter matches, as the metadata index answers it."""
    with db.sessions() as session:
        return {
            label: len(storage.filter_item_ids(session, collection_id=collection.id, where=where))
            for label, (where, _) in FILTERS.items()
        }


def analyze_after_fill(db: Any) -> str | None:
    """PostgreSQL: ``VACUUM (ANALYZE) items, item_metadata``, what autovacuum does after a bulk
    load (PostgreSQL 13+ vacuums after inserts too); returns a note, None on SQLite.

    Without statistics the planner takes ``collection_id = ?`` for selective and ANDs a bitmap of
    the whole collection into every filter query (measured: 82 ms instead of 8 ms at 10^6).
    Without the vacuum's visibility map, a filter's postings are read by index scans that
    visit the heap for every id instead of index-only scans.
    """
    from sqlalchemy import text

    if db.engine.dialect.name != "postgresql":
        return None
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        autovacuum = connection.execute(text("SHOW autovacuum")).scalar_one()
        t0 = time.perf_counter()
        connection.execute(text("VACUUM (ANALYZE) items, item_metadata"))
    return (f"autovacuum is {autovacuum} on this server; `VACUUM (ANALYZE) items, item_metadata` was run "
            f"after the fill ({time.perf_counter() - t0:.1f} s)")


def disk_bytes(db: Any) -> tuple[int, str]:
    """Bytes the database holds for the items, and what was measured."""
    from sqlalchemy import text

    if db.engine.dialect.name == "sqlite":
        path = Path(db.engine.url.database)
        with db.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        total = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
        return total, "SQLite file (+ WAL, after a checkpoint) / N: items, postings, indexes"
    with db.engine.connect() as connection:
        total = int(connection.execute(text(
            "SELECT pg_total_relation_size('items') + pg_total_relation_size('item_metadata')"
        )).scalar_one())  # fmt: skip
    return total, "pg_total_relation_size of items and item_metadata / N: heaps, TOAST, indexes"


# --------------------------------------------------------------------------- backends


@dataclass
class Backend:
    name: str
    url: str
    data_dir: Path


def make_settings(url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": url,
        "model": TINY_TEST_MODEL,
        "pretrained": None,
        "threads": 1,
        "api_keys_disabled": True,
        "rate_limit_per_minute": 0,
        "auth_failures_per_minute": 0,
        "host": "127.0.0.1",
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def sqlite_backend(work: Path) -> Iterator[Backend]:
    data = work / "sqlite"
    data.mkdir(parents=True, exist_ok=True)
    try:
        yield Backend("SQLite", f"sqlite:///{data / 'semstore.db'}", data)
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def postgres_backend(admin_url: str, work: Path) -> Iterator[Backend]:
    """A scratch database on the server of ``admin_url``, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"semstore_bench_path_{os.getpid()}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    data = work / "postgres"
    data.mkdir(parents=True, exist_ok=True)
    try:
        yield Backend("PostgreSQL", make_url(admin_url).set(database=name).render_as_string(hide_password=False), data)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(data, ignore_errors=True)


# --------------------------------------------------------------------------- in process


def in_process_cases(db: Any, collection: Collection, index: Any) -> dict[str, Callable[[np.ndarray], object]]:
    """The timed calls: raw index, the user's path, its one statement, the filtered searches (names unprefixed)."""
    sample_ids = index.ids()[:K].tolist()

    def rows(_: np.ndarray) -> object:
        with db.reads.connect() as connection:
            found, _revision = storage.SearchReads(connection).hit_rows(collection.id, sample_ids)
            return hits_from_rows(found, [0.0] * K)

    cases: dict[str, Callable[[np.ndarray], object]] = {
        "raw": lambda q: index.search(q, K, rerank=RERANK),
        "collection": lambda q: collection.search_vector(q, k=K),
        "rows": rows,
    }
    for label, (where, _) in FILTERS.items():
        cases[f"filter {label}"] = lambda q, w=where: collection.search_vector(q, k=K, where=w)

    def cold(q: np.ndarray, w: dict[str, bool]) -> object:
        collection.filters.forget(filter_key(w))  # as after any write: the ids go, the match count stays
        collection.column_filters.forget(filter_key(w))  # (the metadata columns changed: their ids go too)
        return collection.search_vector(q, k=K, where=w)

    def new(q: np.ndarray, w: dict[str, bool]) -> object:
        collection.filters.forget(filter_key(w), count=True)  # as the first search ever with this filter
        collection.column_filters.forget(filter_key(w), count=True)
        return collection.search_vector(q, k=K, where=w)

    for label in COLD_FILTERS:
        cases[f"filter {label} cold"] = lambda q, w=FILTERS[label][0]: cold(q, w)
        cases[f"filter {label} new"] = lambda q, w=FILTERS[label][0]: new(q, w)
    return cases


def check_filtered_hits(collection: Collection, queries: np.ndarray) -> dict[str, int]:
    """Hits of one filtered search per filter, each checked to carry the filter's metadata."""
    found = {}
    for label, (where, _) in FILTERS.items():
        hits = collection.search_vector(queries[:1], k=K, where=where)
        for hit in hits:
            if any(hit.metadata.get(key) != value for key, value in where.items()):
                raise AssertionError(f"filter {label}: hit {hit.id} has metadata {hit.metadata}")
        found[label] = len(hits)
    return found


def ratio(result: BackendResult, case: str, base: str, q: float = 50) -> float:
    a, b = result.latency.get(case), result.latency.get(base)
    if a is None or b is None:
        return float("nan")
    return a.ms(q) / b.ms(q)


def missed_cases(result: BackendResult, setting: str) -> list[str]:
    """The in-process cases of one index_kind setting whose target was missed (for profiling)."""
    missed = []
    if ratio(result, f"{setting}/collection", f"{setting}/raw") > TARGET_COLLECTION_RATIO:
        missed.append("collection")
    for label in [*FILTERS, *(f"{cold} {when}" for cold in COLD_FILTERS for when in ("cold", "new"))]:
        if ratio(result, f"{setting}/filter {label}", f"{setting}/collection") > TARGET_FILTER_RATIO:
            missed.append(f"filter {label}")
    return missed


def run_in_process(
    db: Any, collection: Collection, result: BackendResult, queries: np.ndarray, *, warmup: int, profile: str,
    setting: str = "auto",
) -> Any:
    """Build the index of ``db``'s index_kind ``setting``, time the in-process cases; returns the index.

    A setting that gives the same index as one measured before is recorded, not timed again.
    """
    t0 = time.perf_counter()
    index = collection.index  # built from the database (load codes, FAISS add; IVF: train too) and saved
    build_s = time.perf_counter() - t0
    assert index is not None and len(index) == result.items, (len(index) if index else None, result.items)
    t0 = time.perf_counter()
    collection.index_service.reload_columns()  # (timed alone: part of every load, and of a catch-up after another process changed metadata)
    columns_s = time.perf_counter() - t0
    described = collection.index_service.describe()
    assert described is not None
    info = KindInfo(
        setting, described.kind, described.nlist, described.nprobe, build_s, index.bytes_per_item,
        metadata_bytes_per_item=described.metadata_bytes / max(1, described.items), metadata_keys=described.metadata_keys,
        metadata_load_s=columns_s,
    )  # fmt: skip
    for other in result.kinds.values():
        if other.same_as is None and (other.kind, other.nlist, other.nprobe) == (info.kind, info.nlist, info.nprobe):
            info.same_as = other.setting
    result.kinds[setting] = info
    if info.same_as is not None:
        return index
    result.code_bytes = collection.codec.bytes_per_vector if collection.codec else 0
    if not result.matching:
        result.matching = filter_matches(db, collection)
    result.hits.update({f"{setting}/{label}": hits for label, hits in check_filtered_hits(collection, queries).items()})
    cases = in_process_cases(db, collection, index)
    result.loads[f"in-process {setting}"] = load_average()
    result.others[f"in-process {setting}"] = other_processes({os.getpid()})
    with one_thread():
        timed = round_robin(cases, queries, warmup=warmup)
        result.latency.update({f"{setting}/{name}": lat for name, lat in timed.items()})
        wanted = list(cases) if profile == "all" else missed_cases(result, setting) if profile == "missed" else []
        for case in wanted:
            result.profiles[f"{setting}/{case}"] = profile_text(cases[case], queries[: min(100, len(queries))])
    return index


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(settings: Settings) -> dict[str, str]:
    """``SEMSTORE_*`` variables reproducing ``settings`` (and one thread everywhere) for ``python -m server``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SEMSTORE_")}
    env.update(settings.as_environment())
    env["PYTHONPATH"] = str(REPO)
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    return env


class ServerProcess:
    """``python -m server`` in its own process, its output in a log file."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def start(self, timeout: float = 600.0) -> float:
        """Start and wait for ``/health`` (indexes loaded); returns the seconds it took."""
        import httpx

        t0 = time.perf_counter()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server"], cwd=REPO, env=server_env(self.settings), stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=10).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not become healthy: {self.log.read_text()[-3000:]}")

    def stop(self) -> str:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def png_bytes(seed: int, size: int = 64) -> bytes:
    """A distinct small noise PNG."""
    from PIL import Image

    pixels = np.random.default_rng([seed, 11]).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


# shared counters of the upload worker: [active, in_flight, images, requests, failures]
ACTIVE, IN_FLIGHT, IMAGES, REQUESTS, FAILURES = range(5)


def upload_worker(url: str, name: str, batch: int, first_seed: int, shared: Any, stop: Any) -> None:
    """Second client (own process): upload ``batch`` new PNGs per request while ``shared[ACTIVE]`` is set."""
    import httpx

    seed = first_seed
    with httpx.Client(base_url=url, timeout=300.0) as client:
        while not stop.is_set():
            with shared.get_lock():
                go = bool(shared[ACTIVE])
                if go:
                    shared[IN_FLIGHT] = 1
            if not go:
                time.sleep(0.005)
                continue
            try:
                files = [("files", (f"up{seed + j}.png", png_bytes(seed + j), "image/png")) for j in range(batch)]
                seed += batch
                response = client.post(f"/v1/collections/{name}/items", files=files)
                added = int(response.json().get("added", 0)) if response.is_success else 0
                with shared.get_lock():
                    shared[IMAGES] += added
                    shared[REQUESTS] += 1
                    shared[FAILURES] += 0 if response.is_success else 1
            except Exception:  # noqa: BLE001 - counted, the benchmark reports it
                with shared.get_lock():
                    shared[FAILURES] += 1
            finally:
                with shared.get_lock():
                    shared[IN_FLIGHT] = 0


class Uploader:
    """The upload worker process and its pause / resume handshake."""

    def __init__(self, url: str, name: str, batch: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.shared = context.Array("q", 5)
        self.stop_event = context.Event()
        self.process = context.Process(
            target=upload_worker, args=(url, name, batch, 10_000_000, self.shared, self.stop_event), daemon=True
        )

    def __enter__(self) -> Uploader:
        self.process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pause()
        self.stop_event.set()
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()

    def value(self, slot: int) -> int:
        with self.shared.get_lock():
            return int(self.shared[slot])

    def resume(self, *, timeout: float = 300.0) -> None:
        """Start uploading; return once one upload request has completed (uploads are under way)."""
        before = self.value(REQUESTS)
        with self.shared.get_lock():
            self.shared[ACTIVE] = 1
        deadline = time.monotonic() + timeout
        while self.value(REQUESTS) == before:
            if time.monotonic() > deadline or not self.process.is_alive():
                raise RuntimeError("the upload worker made no request")
            time.sleep(0.005)

    def pause(self, *, timeout: float = 300.0) -> None:
        """Stop uploading; return once no upload request is in flight."""
        with self.shared.get_lock():
            self.shared[ACTIVE] = 0
        deadline = time.monotonic() + timeout
        while self.value(IN_FLIGHT) and time.monotonic() < deadline:
            time.sleep(0.005)


def http_series(client: Any, name: str, bodies: Sequence[dict[str, Any]], timing: dict[str, list[float]] | None = None) -> list[float]:
    """Sequential searches; the client's wall time of each, and the server's own timing fields."""
    times = []
    for body in bodies:
        t0 = time.perf_counter()
        response = client.post(f"/v1/collections/{name}/search", json=body)
        times.append(time.perf_counter() - t0)
        response.raise_for_status()
        if timing is not None:
            for key, value in response.json()["timing"].items():
                timing.setdefault(key, []).append(float(value))
    return times


def server_index(client: Any) -> str:
    """The server's index of the collection, as ``GET /v1/collections/{name}`` reports it."""
    body = client.get(f"/v1/collections/{COLLECTION_NAME}").raise_for_status().json()
    text = f"{body.get('index_kind')}, {body.get('items'):,} items"
    if body.get("index_nlist"):
        text += f", nlist {body['index_nlist']}, nprobe {body.get('index_nprobe')}"
    return text


def run_http(
    backend: Backend, result: BackendResult, item_ids: np.ndarray, *, queries: int, warmup: int, blocks: int,
    upload_batch: int, log_dir: Path, index_kind: str = "auto", metadata_in_memory: bool = True,
) -> None:
    """Server process: HTTP search idle (item and text queries) and in blocks alternating with uploads."""
    import httpx

    settings = make_settings(backend.url, backend.data_dir, port=free_port(), index_kind=index_kind,
                             metadata_in_memory=metadata_in_memory)  # fmt: skip
    server = ServerProcess(settings, log_dir / f"server-{backend.name.lower()}.log")
    rng = np.random.default_rng(3)
    try:
        result.server_start_s = server.start()
        with httpx.Client(base_url=server.url, timeout=300.0) as client:
            result.server_index["at start"] = server_index(client)
            item_bodies = [{"item_id": int(i), "k": K} for i in rng.choice(item_ids, size=queries + warmup)]
            text_bodies = [{"text": f"a photo number {i}", "k": K} for i in range(queries + warmup)]
            http_series(client, COLLECTION_NAME, item_bodies[:warmup] + text_bodies[:warmup])
            result.loads["http"] = load_average()
            result.others["http"] = other_processes({os.getpid()})
            text_timing: dict[str, list[float]] = {}
            result.latency["http text"] = Latency.of(http_series(client, COLLECTION_NAME, text_bodies[warmup:], text_timing))
            result.server_timing["http text"] = text_timing
            with Uploader(server.url, COLLECTION_NAME, upload_batch) as uploader:
                uploader.resume()  # one warm-up upload (loads the encoder in the server)
                uploader.pause()
                per_block = np.array_split(np.arange(queries), blocks)
                idle, busy = [], []
                idle_timing: dict[str, list[float]] = {}
                busy_timing: dict[str, list[float]] = {}
                images0, requests0 = uploader.value(IMAGES), uploader.value(REQUESTS)
                for block in per_block:
                    bodies = [item_bodies[warmup + i] for i in block]
                    uploader.pause()
                    idle += http_series(client, COLLECTION_NAME, bodies, idle_timing)
                    uploader.resume()
                    t0 = time.perf_counter()
                    busy += http_series(client, COLLECTION_NAME, bodies, busy_timing)
                    result.upload_seconds += time.perf_counter() - t0
                uploader.pause()
                result.upload_images = uploader.value(IMAGES) - images0
                result.upload_requests = uploader.value(REQUESTS) - requests0
                result.upload_failures = uploader.value(FAILURES)
            result.server_index["after the uploads"] = server_index(client)
            result.latency["http item"] = Latency.of(idle)
            result.latency["http item uploading"] = Latency.of(busy)
            result.server_timing["http item"] = idle_timing
            result.server_timing["http item uploading"] = busy_timing
            result.loads["http end"] = load_average()
    finally:
        log = server.stop()
        result.server_errors = [line for line in log.splitlines() if "Traceback" in line or "unexpected error" in line]


# --------------------------------------------------------------------------- one backend


def run_backend(backend: Backend, codec: PQVAECodec, encoder: Any, args: argparse.Namespace, log_dir: Path) -> BackendResult:
    import semstore

    result = BackendResult(backend.name, items=args.items)
    server_kind = args.kinds[-1]  # the server runs with the last setting (its saved index is in the server's data dir)
    queries = unit_vectors(args.queries, codec.dim, seed=1)
    item_ids = None
    for position, setting in enumerate(args.kinds):
        data_dir = backend.data_dir if setting == server_kind else backend.data_dir / f"kind-{setting}"
        settings = make_settings(backend.url, data_dir, index_kind=setting, metadata_in_memory=args.metadata_in_memory)
        db = semstore.connect(backend.url, settings=settings, encoder_factory=lambda _m, _p: encoder)
        try:
            if position == 0:
                collection = db.create_collection(COLLECTION_NAME, model=TINY_TEST_MODEL, codec=codec)
                print(f"  [{backend.name}] filling {args.items:,} items (load {load_average()})", flush=True)
                result.loads["fill"] = load_average()
                result.others["fill"] = other_processes({os.getpid()})
                result.fill_s = fill(db, collection, args.items, batch=args.batch)
                note = analyze_after_fill(db) if not args.no_analyze else "no VACUUM (ANALYZE) after the fill (--no-analyze)"
                if note and db.engine.dialect.name == "postgresql":
                    result.notes.append(note)
                result.disk_bytes, result.disk_what = disk_bytes(db)
            else:
                collection = db.collection(COLLECTION_NAME)
            print(f"  [{backend.name}] index_kind={setting}: in-process searches "
                  f"({args.queries} queries x {len(FILTERS) + 4} cases)", flush=True)
            index = run_in_process(db, collection, result, queries, warmup=args.warmup, profile=args.profile, setting=setting)
            print(f"    {result.kinds[setting].label}; " + format_backend_summary(result, setting), flush=True)
            item_ids = index.ids()
        finally:
            db.close()  # saves the index (the server loads the one of its own setting)
    if not args.no_server and item_ids is not None:
        print(f"  [{backend.name}] HTTP: starting python -m server (index_kind={server_kind})", flush=True)
        run_http(
            backend, result, item_ids, queries=args.http_queries, warmup=args.warmup, blocks=args.blocks,
            upload_batch=args.upload_batch, log_dir=log_dir, index_kind=server_kind,
            metadata_in_memory=args.metadata_in_memory,
        )
    return result


def format_backend_summary(result: BackendResult, setting: str) -> str:
    info = result.kinds[setting]
    if info.same_as is not None:
        return f"the same index as index_kind={info.same_as}: not timed again"
    prefix = f"{setting}/"
    lat = {name[len(prefix):]: value for name, value in result.latency.items() if name.startswith(prefix)}
    return ", ".join(f"{name} p50 {value.p50:.2f} ms" for name, value in lat.items())


# --------------------------------------------------------------------------- report


def verdict(value: float, limit: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    return "ok" if value <= limit else "**MISSED**"


def _cell(lat: Latency | None) -> str:
    return "-" if lat is None else f"{lat.p50:.2f} / {lat.p99:.2f}"


@dataclass(frozen=True)
class TableRow:
    label: str
    case: str
    base: str | None = None  # ratio against this case ...
    q: float = 50  # ... at this percentile
    limit: float | None = None  # target on the ratio (or, without a base, on the p99 in ms)
    target: str = "-"


def kind_rows(setting: str) -> list[TableRow]:
    """The in-process rows of one index_kind setting."""
    p = f"{setting}/"
    return [
        TableRow(f"raw `index.search(q, {K}, rerank={RERANK})`", p + "raw", target="baseline"),
        TableRow(f"`Collection.search_vector(q, k={K})`", p + "collection", p + "raw", 50, TARGET_COLLECTION_RATIO,
                 f"<= {TARGET_COLLECTION_RATIO}x raw (p50)"),
        TableRow(f"  part: its one statement (`SearchReads.hit_rows` of {K} ids + revision, and the hits)", p + "rows", p + "raw"),
        *[
            TableRow(f"filtered `search_vector`, {label} match", f"{p}filter {label}", p + "collection", 50,
                     TARGET_FILTER_RATIO, f"<= {TARGET_FILTER_RATIO}x unfiltered (p50)")
            for label in FILTERS
        ],
        *[
            TableRow(f"filtered `search_vector`, {label} match, {what}", f"{p}filter {label} {when}",
                     p + "collection", 50, TARGET_FILTER_RATIO, f"<= {TARGET_FILTER_RATIO}x unfiltered (p50)")
            for label in COLD_FILTERS
            for when, what in (("cold", "after a write (ids not remembered, match count known)"),
                               ("new", "first use (nothing remembered)"))
        ],
    ]


HTTP_ROWS = [
    TableRow("HTTP search, text (tiny model), idle", "http text"),
    TableRow("HTTP search, `item_id`, idle", "http item", None, 99, TARGET_HTTP_P99_MS, f"p99 <= {TARGET_HTTP_P99_MS:.0f} ms at 10^6"),
    TableRow("HTTP search, `item_id`, during uploads", "http item uploading", "http item", 99, TARGET_UPLOAD_RATIO,
             f"p99 <= {TARGET_UPLOAD_RATIO}x idle p99"),
]


def row_verdict(result: BackendResult, row: TableRow) -> str:
    if row.case not in result.latency:
        return "-"
    if row.base is None:
        if row.limit is None:
            return ""
        at_scale = "" if result.items == DEFAULT_ITEMS else " (N != 10^6)"
        return verdict(result.latency[row.case].ms(row.q), row.limit) + at_scale
    value = ratio(result, row.case, row.base, row.q)
    return f"{value:.2f}x" + ("" if row.limit is None else f" {verdict(value, row.limit)}")


def settings_measured(results: Sequence[BackendResult]) -> list[str]:
    seen: list[str] = []
    for r in results:
        seen += [s for s in r.kinds if s not in seen]
    return seen


def format_table(results: Sequence[BackendResult]) -> str:
    head = "| measurement (1 thread; ms p50 / p99) | " + " | ".join(f"{r.name} p50 / p99 | ratio" for r in results) + " | target |"
    rule = "|---|" + "---|---|" * len(results) + "---|"
    lines = [head, rule]
    blank = " | ".join(" | " for _ in results)
    for setting in settings_measured(results):
        labels = sorted({r.kinds[setting].label for r in results if setting in r.kinds})
        same = sorted({r.kinds[setting].same_as for r in results if setting in r.kinds and r.kinds[setting].same_as})
        title = " / ".join(labels) + (f" (the same index as index_kind={same[0]}: not timed again)" if same else "")
        lines.append(f"| **{title}** | {blank} | |")
        for row in kind_rows(setting):
            if any(row.case in r.latency for r in results):
                cells = " | ".join(f"{_cell(r.latency.get(row.case))} | {row_verdict(r, row)}" for r in results)
                lines.append(f"| {row.label} | {cells} | {row.target} |")
    if any(row.case in r.latency for r in results for row in HTTP_ROWS):
        served = sorted({r.server_index.get("at start", "?") for r in results})
        lines.append(f"| **HTTP, `python -m server` (its index: {' / '.join(served)})** | {blank} | |")
        for row in HTTP_ROWS:
            cells = " | ".join(f"{_cell(r.latency.get(row.case))} | {row_verdict(r, row)}" for r in results)
            lines.append(f"| {row.label} | {cells} | {row.target} |")
    return "\n".join(lines)


def format_facts(results: Sequence[BackendResult]) -> str:
    def per(fn: Callable[[BackendResult], str]) -> str:
        return " | ".join(fn(r) for r in results)

    def kind_fact(setting: str, fn: Callable[[KindInfo], str]) -> Callable[[BackendResult], str]:
        return lambda r: fn(r.kinds[setting]) if setting in r.kinds else "-"

    lines = [
        "| fact | " + " | ".join(r.name for r in results) + " |",
        "|---|" + "---|" * len(results),
        f"| items N | {per(lambda r: f'{r.items:,}')} |",
        f"| fill: `storage.add_items`, {FILL_BATCH:,} rows per transaction | "
        + per(lambda r: f"{r.fill_per_s:,.0f} items/s ({r.fill_s:.0f} s)") + " |",
    ]
    for setting in settings_measured(results):
        lines.append(f"| index_kind={setting}: index built from the database (load codes, FAISS add / IVF train; save) | "
                     + per(kind_fact(setting, lambda k: f"{k.kind} in {k.build_s:.2f} s")) + " |")
        lines.append(f"| index_kind={setting}: RAM per item (`index.bytes_per_item`) | "
                     + per(kind_fact(setting, lambda k: f"{k.ram_bytes_per_item:.1f} B")) + " |")
        lines.append(f"| index_kind={setting}: metadata columns in RAM per item (keys) | "
                     + per(kind_fact(setting, lambda k: f"{k.metadata_bytes_per_item:.1f} B ({', '.join(k.metadata_keys) or 'none'}), read in {k.metadata_load_s:.2f} s")) + " |")
    lines += [
        f"| codes per item | {per(lambda r: f'{r.code_bytes} B')} |",
        (
            "| disk per item (SQLite: database file + WAL after a checkpoint; PostgreSQL: "
            "`pg_total_relation_size` of `items` and `item_metadata`: heaps, TOAST, indexes) | "
            + per(lambda r: f"{r.disk_bytes / r.items:.1f} B ({r.disk_bytes / 2**20:,.1f} MiB total)") + " |"
        ),
        "| items matching the 0 / 1 / 50 % filters | "
        + per(lambda r: " / ".join(f"{r.matching.get(label, 0):,}" for label in FILTERS)) + " |",
    ]
    for setting in settings_measured(results):
        if any(f"{setting}/{label}" in r.hits for r in results for label in FILTERS):
            lines.append(f"| index_kind={setting}: hits of one filtered search (k={K}), 0 / 1 / 50 % | "
                         + per(lambda r, s=setting: " / ".join(str(r.hits.get(f"{s}/{label}", "-")) for label in FILTERS)) + " |")
    if any(r.server_start_s is not None for r in results):
        lines += [
            f"| server start to healthy (index loaded) | {per(lambda r: f'{r.server_start_s:.1f} s' if r.server_start_s else '-')} |",
            "| server's index at start / after the uploads | "
            + per(lambda r: " / ".join(r.server_index.get(k, "-") for k in ("at start", "after the uploads"))) + " |",
            "| uploads during the upload blocks | "
            + per(lambda r: f"{r.upload_images} images in {r.upload_requests} requests, {r.upload_images / r.upload_seconds:.1f} images/s"
                  + (f", {r.upload_failures} failed" if r.upload_failures else "") if r.upload_seconds else "-") + " |",
            f"| server log errors | {per(lambda r: str(len(r.server_errors)))} |",
        ]
    return "\n".join(lines)


def format_server_timing(results: Sequence[BackendResult]) -> str:
    """Where an HTTP search's time goes: the route's own timing fields against the client's wall time."""
    lines = [
        "| backend | series | client wall p50 / p99 | route total_ms p50 / p99 | embed_ms p50 / p99 | search_ms p50 / p99 | outside the route (wall - total) p50 / p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for case, timing in r.server_timing.items():
            wall = r.latency[case].samples * 1000.0
            total = np.asarray(timing.get("total_ms", []))
            if len(total) != len(wall):
                continue

            def pp(values: np.ndarray) -> str:
                return f"{np.percentile(values, 50):.2f} / {np.percentile(values, 99):.2f}"

            lines.append(
                f"| {r.name} | {case} | {pp(wall)} | {pp(total)} | {pp(np.asarray(timing['embed_ms']))} | "
                f"{pp(np.asarray(timing['search_ms']))} | {pp(wall - total)} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def _cpu_ticks() -> dict[int, tuple[int, int, str]]:
    """utime + stime (clock ticks), parent pid and command line of every process, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):
            continue
        found[int(entry.name)] = (int(fields[11]) + int(fields[12]), int(fields[1]), cmd or stat.split()[1])
    return found


def other_processes(own: set[int], seconds: float = 1.0) -> list[str]:
    """Processes that used more than 5 % of a core over ``seconds``, other than this benchmark and its children."""
    before = _cpu_ticks()
    time.sleep(seconds)
    after = _cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (ticks, ppid, cmd) in after.items():
        share = (ticks - before.get(pid, (ticks, 0, ""))[0]) / hz / seconds
        if share >= 0.05 and pid not in own and ppid not in own:
            busy.append((share, f"{100 * share:.0f} % of a core: {cmd[:100]}"))
    return [text for _, text in sorted(busy, reverse=True)[:8]]


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "semstore", "server"], cwd=REPO, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    changed = [line[3:] for line in dirty.splitlines() if line.strip()]
    return head + (f" with uncommitted changes in {', '.join(changed)}" if changed else " (clean semstore/, server/)")


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def format_report(results: Sequence[BackendResult], args: argparse.Namespace, context: Mapping[str, Any]) -> str:
    n = results[0].items if results else args.items
    parts = [
        f"# Search-path benchmark (issue #15): N = {n:,}",
        "",
        f"Run {context['started']} UTC, {context['elapsed']:.0f} s.  ",
        f"Command: `{context['command']}`  ",
        f"Machine: {context['machine']}  ",
        f"CPU: {context['cpu']}; {os.cpu_count()} cores  ",
        f"Code: {context['git']}",
        "",
        f"Collection: model `{TINY_TEST_MODEL}` (random weights, {context['dim']}-d; the search cost does not depend "
        f"on the weights), codec {NUM_SUBVECTORS} x {int(np.log2(CODEBOOK_SIZE))} bits ({context['code_bytes']} B codes, "
        f"layout `{context['layout']}`), trained in {context['codec_s']:.1f} s on 4,000 random unit vectors (k-means "
        "init, no refinement, greedy encoding: timing only, not quality). Items written with `storage.add_items`, "
        "random codes, metadata `{\"p1\": true}` on 1 %, `{\"p50\": true}` on 50 %, the 0 % filter is `{\"p0\": true}` "
        "(no item has it).",
        "",
        f"In process: {args.queries} random unit queries per case after {args.warmup} warm-up rounds, all cases "
        "interleaved query by query, one thread (FAISS OpenMP, torch, BLAS). Percentiles: numpy linear interpolation. "
        "Ratios are of p50 unless the target says p99; a ratio compares two series of the same run. "
        f"Index settings timed one after the other on the same rows: {', '.join(f'index_kind={k}' for k in args.kinds)} "
        "(each in its own Database, so each builds and saves its own index). IVF recall is not reported: on random "
        "codes the coarse lists cut through structureless data, so it would say nothing about real collections "
        "(bench/search_speed.py measures it on CLIP-like data).",
    ]
    if not args.no_server:
        parts += [
            "",
            f"HTTP: `python -m server` (SEMSTORE_* settings: API keys disabled on loopback, rate limits off, "
            f"SEMSTORE_THREADS=1, OMP/BLAS 1 thread, SEMSTORE_INDEX_KIND={args.kinds[-1]}) in its own process on the "
            "same database, loading the index saved by the last in-process setting; this process sends "
            f"sequential `POST /v1/collections/{COLLECTION_NAME}/search` (k={K}, default rerank) on one keep-alive "
            f"connection. `item_id` queries (the route reads the item's codes and decodes them: no encoder), "
            f"{args.http_queries} idle and {args.http_queries} during uploads, in {args.blocks} alternating blocks "
            f"(idle, uploading, idle, ...); text queries with the tiny text tower, idle, {args.http_queries}. "
            f"Uploads: a second process posting {args.upload_batch} new 64 x 64 noise PNGs per request "
            f"(`POST /v1/collections/{COLLECTION_NAME}/items`) back to back; an upload block starts after one upload "
            "completed, an idle block after the last one returned.",
        ]
    parts += ["", "## Results", "", format_table(results), "", format_facts(results)]
    timing = format_server_timing(results)
    if timing:
        parts += ["", "### Where an HTTP search's time goes (ms; the route's `timing` fields against the client's wall time)", "", timing]
    parts += ["", "### Load and other processes", ""]
    for r in results:
        parts.append(f"- {r.name}: load average (1/5/15 min) " + "; ".join(f"{k}: {v}" for k, v in r.loads.items()))
    samples = [("start", "run", context.get("others") or [])]
    samples += [(phase, r.name, busy) for r in results for phase, busy in r.others.items()]
    if any(busy for _, _, busy in samples):
        parts.append("- The machine is shared: processes not of this run that used >= 5 % of a core over 1 s at the start of each phase:")
    for phase, name, busy in samples:
        parts.append(f"  - {name} {phase}: " + ("; ".join(busy) if busy else "none"))
    for r in results:
        for line in r.server_errors[:5]:
            parts.append(f"- {r.name} server log: `{line.strip()[:200]}`")
        for note in r.notes:
            parts.append(f"- {r.name}: {note}")
    profiled = [(r, case, text) for r in results for case, text in r.profiles.items()]
    if profiled:
        parts += ["", "## Profiles", "", "cProfile of up to 100 single-query calls per case (1 thread)."]
        for r, case, text in profiled:
            parts += ["", f"### {r.name}: {case}", "", "```", text, "```"]
    return "\n".join(parts) + "\n"


def write_report(text: str, path: Path) -> None:
    """Write ``text``, keeping whatever follows :data:`KEEP_MARKER` in the existing file."""
    kept = ""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        at = old.find(KEEP_MARKER)
        if at >= 0:
            kept = old[at:]
    path.write_text(text + ("\n" + kept if kept else "\n" + KEEP_MARKER + "\n"), encoding="utf-8")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=None, help=f"items per backend (default {DEFAULT_ITEMS:,}; --quick {QUICK_ITEMS:,})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ITEMS:,} items, fewer queries")
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    parser.add_argument("--postgres", default=os.environ.get("SEMSTORE_TEST_PG_URL", DEFAULT_PG_URL),
                        help="a PostgreSQL URL whose server gets a scratch database for the run")
    parser.add_argument("--queries", type=int, default=None, help="in-process queries per case (default 200; --quick 100)")
    parser.add_argument("--http-queries", type=int, default=None, help="HTTP queries per condition (default 400; --quick 200)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=4, help="idle / uploading block pairs of the HTTP series")
    parser.add_argument("--upload-batch", type=int, default=4, help="images per upload request")
    parser.add_argument("--batch", type=int, default=FILL_BATCH, help="rows per fill transaction")
    parser.add_argument("--kinds", nargs="+", choices=["exhaustive", "ivf", "auto"], default=["exhaustive", "auto"],
                        help="index_kind settings timed in process, one after the other; the server runs with the last "
                             "(default: exhaustive auto; auto is the product default: IVF from ivf_min_items items on)")
    parser.add_argument("--no-server", action="store_true", help="skip the HTTP part")
    parser.add_argument("--sql-filters", dest="metadata_in_memory", action="store_false",
                        help="answer filters from the database (metadata_in_memory=False), not the in-memory columns")
    parser.add_argument("--no-analyze", action="store_true", help="PostgreSQL: no VACUUM (ANALYZE) after the fill")
    parser.add_argument("--profile", choices=["missed", "all", "none"], default="missed",
                        help="cProfile the in-process cases that miss their target (default), all, or none")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown report (rewritten; notes after the marker are kept)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--work-dir", type=Path, default=None, help="where SQLite files, indexes and logs go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.items is None:
        args.items = QUICK_ITEMS if args.quick else DEFAULT_ITEMS
    if args.queries is None:
        args.queries = 100 if args.quick else 200
    if args.http_queries is None:
        args.http_queries = 200 if args.quick else 400
    for name in ("items", "queries", "http_queries", "blocks", "upload_batch", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.http_queries < args.blocks:
        parser.error("--http-queries must be at least --blocks")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from bench.report import cpu_model
    from semstore.encoders import OpenClipEncoder

    args = parse_args(argv)
    started = datetime.now(UTC)
    t_start = time.perf_counter()
    own = {os.getpid()}
    context: dict[str, Any] = {
        "started": f"{started:%Y-%m-%d %H:%M}", "command": command_line(), "cpu": cpu_model(),
        "machine": machine_facts(), "git": git_state(), "others": other_processes(own),
    }
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="semstore-search-path-"))
    work.mkdir(parents=True, exist_ok=True)
    encoder = OpenClipEncoder(TINY_TEST_MODEL, None, threads=1, batch_size=32)
    with one_thread():
        codec, codec_s = train_codec(encoder.dim)
    from semstore.index import ADCIndex

    context.update(dim=encoder.dim, codec_s=codec_s, code_bytes=codec.bytes_per_vector, layout=ADCIndex(codec).layout)
    print(f"search-path benchmark: N={args.items:,}, backends {args.backends}, work dir {work}", flush=True)
    print(f"  codec {NUM_SUBVECTORS}x{CODEBOOK_SIZE} for {encoder.dim}-d trained in {codec_s:.1f}s; {context['machine']}", flush=True)
    results: list[BackendResult] = []
    try:
        for name in args.backends:
            opener = sqlite_backend(work) if name == "sqlite" else postgres_backend(args.postgres, work)
            with opener as backend:
                results.append(run_backend(backend, codec, encoder, args, work))
    finally:
        context["elapsed"] = time.perf_counter() - t_start
        if results:
            report = format_report(results, args, context)
            print("\n" + report)
            if not args.no_write:
                write_report(report, args.out)
                print(f"written to {args.out}")
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
