"""Sharded search on Ray Serve against one node: latency, throughput and fan-out overhead.

Fills a scratch PostgreSQL database with N items (default 10^6, random 16-byte codes, as
``bench/search_path.py`` does), then times, in one run and on the same queries:

* **single node**: ``Collection.search_vector`` on the process's own index;
* **S shards** (``--shards 1 2 4``): the same call through ``Database.use_shard_search`` and
  S Ray Serve shard deployments on this machine (one replica each): every query is sent to
  every shard, each searches its N/S items, the ingress merges and reads the hit rows.

For each setting: p50 / p99 latency of single queries (one client), and throughput with
``--clients`` concurrent clients for ``--seconds`` seconds. The fan-out overhead per query is
the 1-shard latency minus the single-node latency (the same search, plus the Serve round trip
and the merge). **Same-machine shards**: on a 2-core machine S shards share the same two cores,
so shards cut the scan per query but not the total work; the figures say what the machinery
costs, not what S machines would give. ``--index-kind`` is the shards' and the single node's
index (default exhaustive: the kind whose per-query cost falls with 1/S).

Usage::

    python bench/shard_search.py [--items 1000000] [--shards 1 2 4] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import semstore  # noqa: E402
from bench import search_path as sp  # noqa: E402
from bench.report import RESULTS, command_line, machine_facts, publish_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def latencies(call: Callable[[np.ndarray], object], queries: np.ndarray, warmup: int = 10) -> list[float]:
    for q in queries[:warmup]:
        call(q[None, :])
    out = []
    for q in queries:
        t0 = time.perf_counter()
        call(q[None, :])
        out.append((time.perf_counter() - t0) * 1000)
    return out


def throughput(call: Callable[[np.ndarray], object], queries: np.ndarray, clients: int, seconds: float) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(slot: int) -> None:
        i = slot
        while time.monotonic() < stop:
            call(queries[i % len(queries)][None, :])
            done[slot] += 1
            i += clients

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(clients)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - t0)


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients of the throughput run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each throughput run")
    parser.add_argument("--index-kind", choices=["exhaustive", "ivf", "auto"], default="exhaustive")
    parser.add_argument("--postgres", default=os.environ.get("SEMSTORE_TEST_PG_URL", sp.DEFAULT_PG_URL))
    parser.add_argument("--out", type=Path, default=None, help=f"append the table to this markdown file (e.g. {RESULTS})")
    args = parser.parse_args(argv)
    if args.items < 1 or any(s < 1 for s in args.shards) or args.clients < 1:
        parser.error("--items, --shards and --clients must be at least 1")

    import ray
    from ray import serve

    from semstore.distributed.shard_serving import deploy_shards
    from semstore.encoders import OpenClipEncoder

    encoder = OpenClipEncoder(sp.TINY_TEST_MODEL, None, threads=1, batch_size=32)
    codec, _ = sp.train_codec(encoder.dim)
    queries = sp.unit_vectors(args.queries, codec.dim, seed=1)
    rows: list[tuple[str, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="semstore-shards-") as scratch, sp.postgres_backend(args.postgres, Path(scratch)) as backend:
        settings = sp.make_settings(backend.url, backend.data_dir, index_kind=args.index_kind)
        db = semstore.connect(backend.url, settings=settings, encoder_factory=lambda _m, _p: encoder)
        collection = db.create_collection(sp.COLLECTION_NAME, model=sp.TINY_TEST_MODEL, codec=codec)
        print(f"filling {args.items:,} items", flush=True)
        sp.fill(db, collection, args.items)
        print(sp.analyze_after_fill(db), flush=True)
        index = collection.index
        assert index is not None
        print(f"single node: {type(index).__name__}, {len(index):,} items", flush=True)

        def single(q: np.ndarray) -> object:
            return collection.search_vector(q, k=sp.K)

        with sp.one_thread():  # (as each shard replica: OMP_NUM_THREADS=1)
            lat = latencies(single, queries)
            rows.append(("single node (own index)", pct(lat, 50), pct(lat, 99), throughput(single, queries, args.clients, args.seconds)))
        print(f"  {rows[-1]}", flush=True)
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})  # fmt: skip
        try:
            via = semstore.connect(backend.url, settings=settings, encoder_factory=lambda _m, _p: encoder)
            through = via.collection(sp.COLLECTION_NAME)
            for count in args.shards:
                print(f"{count} shard(s): deploying", flush=True)
                t0 = time.perf_counter()
                search = deploy_shards(settings, shards=count, name=f"bench{count}", timeout_s=60.0)
                via.use_shard_search(search)
                through.search_result(queries[0][None, :], k=sp.K)  # every shard builds its index
                print(f"  ready in {time.perf_counter() - t0:.0f} s", flush=True)

                def sharded(q: np.ndarray) -> object:
                    result = through.search_result(q, k=sp.K)
                    assert not result.partial
                    return result

                lat = latencies(sharded, queries)
                rows.append((f"{count} shard(s) on Ray Serve", pct(lat, 50), pct(lat, 99),
                             throughput(sharded, queries, args.clients, args.seconds)))  # fmt: skip
                print(f"  {rows[-1]}", flush=True)
                for number in range(count):
                    serve.delete(f"bench{count}-shard-{number}-of-{count}")
            via.close()
        finally:
            serve.shutdown()
            ray.shutdown()
            db.close()

    single_p50 = rows[0][1]
    one_shard = next((r for r in rows if r[0].startswith("1 shard")), None)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Sharded search on Ray Serve, same-machine shards ({when}, `bench/shard_search.py`)",
        "",
        f"PostgreSQL, {args.items:,} items (16-byte random codes), index kind {args.index_kind}, k = {sp.K}, "
        f"re-rank 100; {args.queries} single-client queries (p50 / p99), then {args.clients} concurrent clients "
        f"for {args.seconds:.0f} s (throughput); FAISS one thread per process; all shards share this machine's cores. "
        f"Command: `{command_line()}`. Machine: {machine_facts()}.",
        "",
        "| setting | p50 ms | p99 ms | queries/s |",
        "|---|---|---|---|",
        *[f"| {name} | {p50:.2f} | {p99:.2f} | {qps:.1f} |" for name, p50, p99, qps in rows],
        "",
    ]
    if one_shard is not None:
        lines.append(f"Fan-out overhead per query (1 shard p50 - single node p50): {one_shard[1] - single_p50:.2f} ms.")
    publish_section(lines, append=args.out is not None, path=args.out or RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
