"""Bytes per item in RAM and on disk: semstore (16-byte codes) against float32 / float16 embeddings.

* RAM: ``ADCIndex.bytes_per_item`` of a loaded index (8-bit and fast-scan layouts) against a
  FAISS ``IndexFlatIP`` of float32 (2048 B) or float16 (``IndexScalarQuantizer`` fp16, 1024 B)
  vectors, each measured as the bytes of its per-item buffers after adding N items.
* Disk: N items stored through ``semstore.storage`` (schema 0002: codes, 16-byte binary
  content hash + its (collection_id, content_hash) unique index, the (collection_id, id)
  index, source URI, width/height, created_at as integer seconds on SQLite / timestamptz
  on PostgreSQL, empty metadata JSON; the SQLite file also holds the codec, about 360 KB,
  18 B/item at 20,000 items), against an rclip-like table (``id, filepath UNIQUE,
  modified_at, vector BLOB``) holding the float32 or float16 embedding instead of the
  codes, in SQLite (file size after a checkpoint) and
  PostgreSQL (``pg_total_relation_size``: table + TOAST + indexes; a bytea column, the same
  bytes as pgvector's ``vector(512)`` / ``halfvec(512)`` data, pgvector not being installed).

"User metadata" = the source URI (``/photos/<i>.jpg``, its length is reported) and the
metadata JSON (empty here); the "excl. URI" column subtracts the average URI length.

Usage::

    python bench/storage_size.py --items 100000 [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from bench.cold_start import disk_bytes, fill, small_codec  # noqa: E402
from bench.report import publish  # noqa: E402
from semstore import storage  # noqa: E402
from semstore.codec import PQVAECodec  # noqa: E402
from semstore.index import ADCIndex  # noqa: E402

DIM = 512
_BATCH = 20_000


def ram_rows(items: int) -> list[tuple[str, float]]:
    rng = np.random.default_rng(0)
    rows = []
    for name, (m, k) in (("semstore ADC pq (16 x 8 bit)", (16, 256)), ("semstore ADC fastscan (32 x 4 bit)", (32, 16))):
        codec = PQVAECodec(dim=64, num_subvectors=m, codebook_size=k, iterations=0, kmeans_iterations=2, beam_size=1)
        codec.fit(rng.standard_normal((1000, 64)).astype(np.float32), progress=False)
        codes = rng.integers(0, k, size=(items, m))
        index = ADCIndex.build(codec, np.arange(items, dtype=np.int64) + 1, codes)
        rows.append((name, index.bytes_per_item))
    flat = faiss.IndexFlatIP(DIM)
    half = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    for name, index in (("float32 (FAISS Flat)", flat), ("float16 (FAISS SQfp16)", half)):
        for start in range(0, items, _BATCH):
            index.add(rng.standard_normal((min(_BATCH, items - start), DIM)).astype(np.float32))
        rows.append((name, index.codes.size() / items))
    return rows


def fill_float_table(url: str, items: int, dtype: str) -> None:
    """An rclip-like table of ``items`` embeddings stored as float32 / float16 bytes."""
    blob = "BLOB" if url.startswith("sqlite") else "BYTEA"
    key = "INTEGER PRIMARY KEY" if url.startswith("sqlite") else "BIGSERIAL PRIMARY KEY"
    engine = create_engine(storage.normalize_database_url(url), poolclass=NullPool)
    rng = np.random.default_rng(2)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE images (id {key}, filepath TEXT UNIQUE NOT NULL, modified_at REAL, vector {blob})"))
    for start in range(0, items, _BATCH):
        vectors = rng.standard_normal((min(_BATCH, items - start), DIM)).astype(dtype)
        rows = [{"f": f"/photos/{start + i}.jpg", "m": 1.7e9 + i, "v": v.tobytes()} for i, v in enumerate(vectors)]
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO images (filepath, modified_at, vector) VALUES (:f, :m, :v)"), rows)


def sqlite_bytes(workdir: Path, label: str, items: int, setup) -> float:
    path = workdir / f"{label}.db"
    url = f"sqlite:///{path}"
    setup(url)
    with create_engine(url, poolclass=NullPool).connect() as connection:
        connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    return disk_bytes(url, path) / items


def postgres_bytes(admin_url: str, items: int, setup) -> float:
    admin = create_engine(storage.normalize_database_url(admin_url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"semstore_size_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        setup(url)
        engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with engine.connect() as connection:
            table = "items" if connection.execute(text("SELECT to_regclass('items')")).scalar_one() else "images"
            connection.execute(text(f"VACUUM ANALYZE {table}"))
            size = connection.execute(text(f"SELECT pg_total_relation_size('{table}')")).scalar_one()
        return float(size) / items
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL server; scratch databases are created and dropped")
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    n = args.items
    codec = small_codec()
    uri_bytes = float(np.mean([len(f"/photos/{i}.jpg") for i in range(n)]))
    setups = {
        "semstore (16-byte codes)": lambda url: fill(url, codec, n),
        "float32 embedding (rclip-like)": lambda url: fill_float_table(url, n, "float32"),
        "float16 embedding": lambda url: fill_float_table(url, n, "float16"),
    }
    disk: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for number, (label, setup) in enumerate(setups.items()):
            t0 = time.perf_counter()
            disk[label] = {"SQLite": sqlite_bytes(Path(tmp), f"db{number}", n, setup)}
            if args.postgres:
                disk[label]["PostgreSQL"] = postgres_bytes(args.postgres, n, setup)
            print(f"{label}: {disk[label]} ({time.perf_counter() - t0:.1f}s)", flush=True)
    ram = ram_rows(n)

    databases = ["SQLite"] + (["PostgreSQL"] if args.postgres else [])
    lines = [
        "| stored as | " + " | ".join(f"{d} B/item | {d} excl. URI" for d in databases) + " |",
        "|---|" + "---|---|" * len(databases),
    ]
    for label, sizes in disk.items():
        lines.append(f"| {label} | " + " | ".join(f"{sizes[d]:.1f} | {sizes[d] - uri_bytes:.1f}" for d in databases) + " |")
    ram_lines = ["| loaded index | RAM B/item |", "|---|---|", *(f"| {name} | {value:.1f} |" for name, value in ram)]
    semstore_sqlite = disk["semstore (16-byte codes)"]["SQLite"] - uri_bytes
    body = "\n".join(
        [
            f"{n:,} items; source URIs `/photos/<i>.jpg` average {uri_bytes:.1f} bytes; metadata JSON empty.",
            "",
            *lines,
            "",
            *ram_lines,
            "",
            f"Targets: RAM <= 24 B/item including ids: {ram[0][1]:.1f} / {ram[1][1]:.1f} B (8-bit / fast-scan). "
            f"SQLite <= 64 B/item plus user metadata: {semstore_sqlite:.1f} B excluding the URI "
            f"({'met' if semstore_sqlite <= 64 else f'MISSED by {semstore_sqlite - 64:.0f} B'}).",
        ]
    )
    publish("Storage and memory per item", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
