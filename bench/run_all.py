"""Run every performance bench in turn; each prints its table and appends it to bench/RESULTS.md.

* ``search_speed.py``: search speed and recall vs N against FAISS baselines, cost exponent,
  IVF nprobe curve (quick: N = 1e4, 1e5; full: up to 1e6),
* ``storage_size.py``: bytes per item in RAM, SQLite and PostgreSQL vs float32 / float16,
* ``ingest_speed.py``: images/s end to end with ViT-B-32 (random weights), codec and database shares,
* ``cold_start.py``: rebuilding the index from stored codes, saving and loading it,
* ``encode_speed.py``: codec encoding vectors/s and quality per beam width on real MiniLM
  embeddings (quick: 10k / 2k split, beams 1 4 8 16; the fitted codec is cached).

Usage::

    python bench/run_all.py --quick        # under 10 minutes on 2 cores once the data cache exists
    python bench/run_all.py                # full: 1e6 items (encodes and caches 1e6 vectors first)

PostgreSQL rows use ``--postgres URL`` (default: ``SEMSTORE_TEST_PG_URL`` or the local test
server); ``--no-postgres`` skips them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def plan(quick: bool, postgres: str | None, write: bool) -> list[list[str]]:
    pg = ["--postgres", postgres] if postgres else []
    extra = [] if write else ["--no-write"]
    if quick:
        return [
            ["search_speed.py", "--quick", "--profile", *extra],
            ["storage_size.py", "--items", "20000", *pg, *extra],
            ["ingest_speed.py", "--images", "128", *extra],
            ["cold_start.py", "--items", "100000", *pg, *extra],
            ["encode_speed.py", "--quick", *extra],
        ]
    return [
        ["search_speed.py", "--profile", *extra],
        ["storage_size.py", "--items", "200000", *pg, *extra],
        ["ingest_speed.py", "--images", "512", *extra],
        ["cold_start.py", "--items", "1000000", *pg, *extra],
        ["encode_speed.py", *extra],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--postgres", default=os.environ.get("SEMSTORE_TEST_PG_URL", DEFAULT_PG))
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    failed = []
    for script, *options in plan(args.quick, None if args.no_postgres else args.postgres, not args.no_write):
        print(f"\n=== {script} {' '.join(options)}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / script), *options], env=env)
        print(f"=== {script}: exit {code} after {time.perf_counter() - t0:.0f}s", flush=True)
        if code:
            failed.append(script)
    print(f"\nall benches: {time.perf_counter() - started:.0f}s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
