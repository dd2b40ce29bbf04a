"""Replica sizing: RAM per item and ADC scan time of one in-memory index, extrapolated to 1e8 / 1e9 items.

Builds an :class:`ADCIndex` over N random codes (M=16 codes of 8 bits: 16 bytes per item,
the default) and measures, in this process:

* ``index bytes/item``: :attr:`ADCIndex.memory_bytes` / N (FAISS codes + id map + id lookup),
* ``RSS bytes/item``: growth of the process's resident memory (after freeing the inputs), / N,
* ``scan ns/item``: single-thread search time per query (k=10, rerank 100), / N.

Then, for 1e8 and 1e9 items, the RAM one replica needs for the index, the single-query
latency of one replica with ``--threads`` cores (the scan splits over threads, FAISS
parallelises over the database for one query), and the number of shards needed to keep
within ``--ram-gb`` and ``--latency-ms`` per replica. Linear extrapolation: ADC is a full
scan, so time and memory are linear in N.

Usage::

    python bench/replica_sizing.py [--items 1000000] [--threads 16] [--ram-gb 64] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import load_average, publish_section  # noqa: E402
from semstore.codec import PQVAECodec  # noqa: E402
from semstore.index import ADCIndex  # noqa: E402

M, K, DIM = 16, 256, 512


def settled_rss() -> int:
    """Resident bytes of this process after freed memory went back to the OS (glibc ``malloc_trim``)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--threads", type=int, default=16, help="cores per replica in the extrapolation")
    parser.add_argument("--ram-gb", type=float, default=64.0, help="RAM a replica may give its index")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="single-query scan budget per replica")
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)

    rng = np.random.default_rng(0)
    codec = PQVAECodec(dim=DIM, num_subvectors=M, codebook_size=K, iterations=1).fit(
        rng.standard_normal((4096, DIM)).astype(np.float32), progress=False
    )
    before = settled_rss()
    codes = rng.integers(0, K, size=(args.items, M), dtype=np.uint8)
    ids = np.arange(1, args.items + 1, dtype=np.int64)
    index = ADCIndex.build(codec, ids, codes)
    del codes, ids
    rss_per_item = (settled_rss() - before) / args.items
    index_per_item = index.bytes_per_item
    queries = rng.standard_normal((args.queries, DIM)).astype(np.float32)
    index.search(queries[:1], 10, rerank=100)  # warm-up
    started = time.perf_counter()
    for query in queries:
        index.search(query[None, :], 10, rerank=100)
    scan_ns = (time.perf_counter() - started) / args.queries / args.items * 1e9
    load = load_average()

    rows = []
    for n in (10**8, 10**9):
        ram_gb = n * rss_per_item / 1e9
        latency_ms = n * scan_ns / args.threads / 1e6
        shards = max(math.ceil(ram_gb / args.ram_gb), math.ceil(latency_ms / args.latency_ms), 1)
        rows.append(f"| {n:.0e} | {n * index_per_item / 1e9:.1f} | {ram_gb:.1f} | {latency_ms:,.0f} | {shards} | "
                    f"{ram_gb / shards:.1f} | {latency_ms / shards:,.0f} |")
    lines = [
        f"## {datetime.now(UTC):%Y-%m-%d %H:%M} — replica sizing (`bench/replica_sizing.py`)",
        "",
        f"Command: `{' '.join(['python bench/replica_sizing.py', *sys.argv[1:]])}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load avg {load}, faiss {faiss.__version__}, 1 FAISS thread  ",
        f"Measured on {args.items:,} items (M={M} x 8 bits, dim {DIM}): index {index_per_item:.1f} B/item "
        f"(FAISS codes + id map + lookup), process RSS growth {rss_per_item:.1f} B/item, "
        f"scan {scan_ns:.2f} ns/item/query on 1 thread (k=10, rerank 100).  ",
        f"Extrapolated (linear) to replicas with {args.threads} cores, at most {args.ram_gb:g} GB of index RAM and "
        f"{args.latency_ms:g} ms of scan per query:",
        "",
        "| items | index GB (memory_bytes) | RSS GB, 1 replica | 1-query scan ms, 1 replica | shards needed | GB per shard | ms per shard |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    publish_section(lines, append=not args.no_results)


if __name__ == "__main__":
    main()
