"""Cold start: time to rebuild the ADC index from N stored codes, and to load a saved index.

Stores N items with random codes (M=16, K=256: 16 bytes each) in a SQLite file and/or a
PostgreSQL database, then measures, in this process:

* ``load_codes``: streaming ids + codes out of the database,
* ``build``: building the FAISS ADC index from them,
* ``save`` / ``load``: writing the index directory and reading it back (with its checks),
* bytes per item on disk (SQLite file size / PostgreSQL table + indexes) and in RAM.

Usage::

    python bench/cold_start.py --items 1000000 [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semstore import storage  # noqa: E402
from semstore.codec import PQVAECodec  # noqa: E402
from semstore.index import ADCIndex, IndexVersion  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")


def small_codec(dim: int = 64) -> PQVAECodec:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, dim)).astype(np.float32)
    # the items' codes are random: the codec only supplies a codebook, so train it the fast way
    return PQVAECodec(
        dim=dim, num_subvectors=16, codebook_size=256, iterations=0, kmeans_iterations=2, beam_size=1, init="kmeans"
    ).fit(x, progress=False)


def fill(url: str, codec: PQVAECodec, items: int, batch: int = 50_000) -> int:
    storage.upgrade_head(url)
    sessions = storage.session_factory(storage.create_db_engine(url))
    rng = np.random.default_rng(1)
    with storage.transaction(sessions) as session:
        row = storage.save_codec(session, content_hash=codec.content_hash, config=codec.config.to_dict(), weights=codec.to_bytes())
        collection = storage.create_collection(session, name="bench", model="bench", pretrained=None, dim=codec.dim, codec_id=row.id)
        collection_id, codec_id = collection.id, row.id
    for start in range(0, items, batch):
        n = min(batch, items - start)
        codes = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
        rows = [
            storage.NewItem(source_uri=f"/photos/{start + i}.jpg", content_hash=f"{start + i:032x}", codes=c, codec_id=codec_id, width=640, height=480)
            for i, c in enumerate(storage.pack_codes(codes))
        ]
        with storage.transaction(sessions) as session:
            storage.add_items(session, collection_id=collection_id, items=rows)
    return collection_id


def measure(label: str, url: str, codec: PQVAECodec, collection_id: int, workdir: Path) -> dict[str, float]:
    sessions = storage.session_factory(storage.create_db_engine(url))
    t0 = time.perf_counter()
    with sessions() as session:
        ids, codes = storage.load_codes(session, collection_id=collection_id, num_subvectors=16, dtype=np.uint8)
        state = storage.collection_state(session, collection_id=collection_id)
    t1 = time.perf_counter()
    index = ADCIndex.build(codec, ids, codes)
    t2 = time.perf_counter()
    version = IndexVersion(codec.content_hash, state.count, state.max_id, state.revision)
    index.save(workdir / f"index-{label}", version)
    t3 = time.perf_counter()
    ADCIndex.load(workdir / f"index-{label}", codec, expected=version)
    t4 = time.perf_counter()
    return {
        "items": float(len(ids)),
        "load_codes_s": t1 - t0,
        "build_s": t2 - t1,
        "rebuild_total_s": t2 - t0,
        "save_s": t3 - t2,
        "load_saved_s": t4 - t3,
        "ram_bytes_per_item": index.bytes_per_item,
    }


def disk_bytes(url: str, path: Path | None) -> float:
    if path is not None:
        return float(sum(p.stat().st_size for p in path.parent.glob(path.name + "*")))
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        return float(connection.execute(text("SELECT pg_total_relation_size('items')")).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL server; a scratch database is created and dropped")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()

    codec = small_codec()
    rows: list[tuple[str, dict[str, float], float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if not args.no_sqlite:
            db_file = workdir / "bench.db"
            url = f"sqlite:///{db_file}"
            t = time.perf_counter()
            cid = fill(url, codec, args.items)
            print(f"sqlite: stored {args.items} items in {time.perf_counter() - t:.1f}s")
            with create_engine(url).connect() as c:
                c.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            rows.append(("SQLite", measure("sqlite", url, codec, cid, workdir), disk_bytes(url, db_file) / args.items))
        if args.postgres:
            admin = create_engine(storage.normalize_database_url(args.postgres), isolation_level="AUTOCOMMIT", poolclass=NullPool)
            name = f"semstore_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
            url = admin.url.set(database=name).render_as_string(hide_password=False)
            try:
                t = time.perf_counter()
                cid = fill(url, codec, args.items)
                print(f"postgres: stored {args.items} items in {time.perf_counter() - t:.1f}s")
                with create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool).connect() as c:
                    c.execute(text("VACUUM ANALYZE items"))
                rows.append(("PostgreSQL", measure("pg", url, codec, cid, workdir), disk_bytes(url, None) / args.items))
            finally:
                with admin.connect() as c:
                    c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    header = "| database | items | load codes s | build index s | rebuild total s | save s | load saved s | RAM B/item | disk B/item |"
    lines = [header, "|" + "---|" * 9]
    for label, m, disk in rows:
        lines.append(
            f"| {label} | {int(m['items']):,} | {m['load_codes_s']:.2f} | {m['build_s']:.2f} | {m['rebuild_total_s']:.2f} "
            f"| {m['save_s']:.2f} | {m['load_saved_s']:.2f} | {m['ram_bytes_per_item']:.1f} | {disk:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        command = "python bench/cold_start.py " + " ".join(sys.argv[1:])
        with RESULTS.open("a") as out:
            out.write(
                f"\n## Cold start ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)\n\n`{command}` on {platform.processor() or platform.machine()}, "
                f"Python {platform.python_version()}; 16-byte codes (M=16, K=256), random codes, user metadata empty.\n\n{table}\n"
            )


if __name__ == "__main__":
    main()
