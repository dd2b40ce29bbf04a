"""IVF at scale (issue #15): IVFIndex vs the exhaustive ADCIndex on up to 10^7 structured codes.

Target: at 10^7 items, ``IVFIndex`` search <= 5 ms single-thread (p50, batch 1) with
10-recall@10 >= 0.95 against the exhaustive ``ADCIndex`` result on the same codes.

What runs, in one process:

1. **Codec**: the M=16 K=256 (16-byte codes) ``PQVAECodec`` of ``bench/search_speed.py``
   (``search_data.codec("pq16x8")``: 2,000 training vectors, k-means init, no refinement
   iterations, greedy encoding (beam 1); cached in ``bench/.cache/search/``). Fast to train,
   not the quality defaults: the codes are the subject here, not the codec's accuracy.
2. **Codes of N structured items**: SYNTHETIC CLIP-like 512-d document vectors from the space
   of ``bench/search_data.py`` (64-d Gaussian-mixture latent with 20 classes, decaying
   spectrum, lifted to 512-d plus isotropic noise, unit norm), drawn ``--chunk`` at a time by
   :func:`documents` (the document-view formula of ``SyntheticSpace.views`` with float32
   normals and without drawing the query view: same distribution, about 6x faster), each
   chunk encoded with the codec and its floats dropped. Every item's code is the greedy
   encoding of its own vector. Codes are cached per chunk in ``bench/.cache/ivf_scale/``
   (gitignored), keyed by codec hash, generator version, seed, chunk size and chunk number,
   so a rerun (or a smaller N) skips generation; a JSON side file keeps the seconds spent.
3. **Indexes**: ``IVFIndex.build(codec, ids, codes, nlist=...)`` (default
   ``default_nlist(N)``) and ``ADCIndex.build(codec, ids, codes)`` (IndexPQ layout), timed,
   with ``bytes_per_item`` of each and the process RSS after each step.
4. **Queries**: ``--queries`` (default 200) held-out SYNTHETIC query-view vectors
   (``search_data.queries``: a second noisy view of new latents plus the modality gap, seed
   stream disjoint from the database; ``--query-view doc`` uses held-out document-view
   vectors instead). One thread (FAISS OpenMP and BLAS limited together), batch 1, interleaved
   query by query over every case (exhaustive and each nprobe, each with ``rerank=100``, the
   product default, and ``rerank=None``), after an untimed warm-up: p50 / p99 ms per query
   over all timed calls, and 10-recall@10 of IVF against the exhaustive ADCIndex top-10 with
   the same rerank setting (the results of the timed calls themselves).

Prints a Markdown report (command, machine, load average before/after, data, method, table,
verdict against the target); ``--out FILE`` also writes it there.

Usage::

    python bench/ivf_scale.py --quick                  # N = 200,000
    python bench/ivf_scale.py --n 1000000 --out /tmp/ivf_1e6.md
    python bench/ivf_scale.py --out bench/ivf_scale_results.md     # N = 10^7 (the target)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

from bench import search_data  # noqa: E402
from bench.datasets import SyntheticSpace  # noqa: E402
from bench.metrics import recall_at_k  # noqa: E402
from bench.report import CACHE, command_line, load_average, machine_facts  # noqa: E402
from bench.report import limit_threads as threads  # noqa: E402
from semstore.codec import PQVAECodec  # noqa: E402
from semstore.codec.lut_search import native_bfloat16  # noqa: E402
from semstore.index import ADCIndex  # noqa: E402
from semstore.index.ivf import default_nlist  # noqa: E402
from semstore.index.ivf_index import DEFAULT_NPROBE, IVFIndex  # noqa: E402

K = 10
RERANK = 100  # semstore.collection.DEFAULT_RERANK (not imported: that module is heavy and in flux)
FULL_N = 10_000_000
QUICK_N = 200_000
CHUNK = 100_000
NPROBES = (8, 16, 32, 64, 128)
TARGET_MS = 5.0
TARGET_RECALL = 0.95
GENERATOR = "docs-f32-v1"  # bump when documents() changes: it is part of the cache key
FOLDER = CACHE / "ivf_scale"
WARMUP_QUERIES = 5


# --------------------------------------------------------------------------- helpers




def rss_mib() -> float:
    """Current resident set size of this process, MiB (from /proc; nan elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# --------------------------------------------------------------------------- data


def space() -> SyntheticSpace:
    """The SYNTHETIC CLIP-like space of ``bench/search_data.py`` (same seed, same classes)."""
    return search_data._space()


def documents(synthetic: SyntheticSpace, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` document-view unit vectors (n, dim) float32: the formula of ``SyntheticSpace.views``.

    Same distribution as ``views(n, rng)[0]`` (class mean + 1.2 N(0, I) latent, lifted, plus
    isotropic noise of 0.35 x the chunk's mean norm / sqrt(dim), normalised), but the normals
    are drawn in float32 and the query view is not drawn: about 6x faster, which matters at 10^7.
    """
    labels = rng.integers(0, synthetic.n_classes, n)
    z = synthetic.means[labels] + 1.2 * rng.standard_normal((n, synthetic.latent_dim), dtype=np.float32)
    base = z @ synthetic.lift
    scale = float(np.linalg.norm(base, axis=1).mean())
    base += np.float32(0.35 * scale / np.sqrt(synthetic.dim)) * rng.standard_normal((n, synthetic.dim), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    return base


def query_vectors(n: int, view: str) -> np.ndarray:
    """Held-out queries: the text view of ``search_data.queries`` or new document-view vectors."""
    if view == "text":
        return np.ascontiguousarray(search_data.queries(n), dtype=np.float32)
    return documents(space(), n, np.random.default_rng([search_data.SEED, 7, 2]))


@dataclass
class CodeSource:
    """Where the N codes came from and what making them cost."""

    chunks: int = 0
    cached_chunks: int = 0
    generate_s: float = 0.0  # spent in this run
    encode_s: float = 0.0  # spent in this run
    recorded_generate_s: float = 0.0  # as recorded when each chunk was made (cached ones too)
    recorded_encode_s: float = 0.0
    recorded_items: int = 0
    load_s: float = 0.0


def _save(path: Path, array: np.ndarray) -> None:
    """Write then rename: an interrupted run never leaves a truncated cache file."""
    partial = path.with_name(path.name + ".partial.npy")
    np.save(partial, array)
    os.replace(partial, path)


def codes_for(codec: PQVAECodec, n: int, chunk: int, build_threads: int) -> tuple[np.ndarray, CodeSource]:
    """Codes (n, M) uint8 of the first ``n`` structured items, generated and encoded chunk by chunk."""
    FOLDER.mkdir(parents=True, exist_ok=True)
    encoding = "bf16" if native_bfloat16() else "f32"  # the default encode's products depend on the CPU
    key = f"{codec.content_hash[:16]}-{GENERATOR}-s{search_data.SEED}-c{chunk}-{encoding}"
    synthetic = space()
    source = CodeSource(chunks=(n + chunk - 1) // chunk)
    out = np.empty((n, codec.num_subvectors), dtype=codec.code_dtype)
    started = time.perf_counter()
    for i in range(source.chunks):
        path = FOLDER / f"codes-{key}-{i}.npy"
        facts = path.with_suffix(".json")
        rows = min(chunk, n - i * chunk)
        if path.exists():
            t0 = time.perf_counter()
            codes = np.load(path)
            source.load_s += time.perf_counter() - t0
            source.cached_chunks += 1
            if facts.exists():
                seconds = json.loads(facts.read_text())
                source.recorded_generate_s += seconds["generate_s"]
                source.recorded_encode_s += seconds["encode_s"]
                source.recorded_items += len(codes)
        else:
            with threads(build_threads):
                t0 = time.perf_counter()
                vectors = documents(synthetic, chunk, np.random.default_rng([search_data.SEED, 7, 100 + i]))
                t1 = time.perf_counter()
                codes = codec.encode(vectors)
                t2 = time.perf_counter()
            del vectors
            _save(path, codes)
            facts.write_text(json.dumps({"generate_s": t1 - t0, "encode_s": t2 - t1, "items": chunk}))
            source.generate_s += t1 - t0
            source.encode_s += t2 - t1
            source.recorded_generate_s += t1 - t0
            source.recorded_encode_s += t2 - t1
            source.recorded_items += chunk
            made = i + 1 - source.cached_chunks
            if made == 1 or made % 10 == 0 or i + 1 == source.chunks:
                rate = made * chunk / max(source.generate_s + source.encode_s, 1e-9)
                left = (source.chunks - i - 1) * chunk / rate
                print(
                    f"  chunk {i + 1}/{source.chunks}: generate {t1 - t0:.1f} s, encode {t2 - t1:.1f} s "
                    f"({chunk / (t2 - t1):,.0f} vectors/s); about {fmt_s(left)} left",
                    flush=True,
                )
        out[i * chunk : i * chunk + rows] = codes[:rows]
    if source.cached_chunks:
        print(f"  {source.cached_chunks} of {source.chunks} chunks from the cache ({FOLDER})", flush=True)
    print(f"  codes of {n:,} items ready in {fmt_s(time.perf_counter() - started)}", flush=True)
    return out, source


# --------------------------------------------------------------------------- measurement


@dataclass
class Case:
    """One search setting, timed query by query."""

    name: str  # "exhaustive" or "IVF nprobe P"
    nprobe: int | None
    rerank: int | None
    search: Callable[[np.ndarray], np.ndarray]  # one query (1, dim) -> ids (1, K)
    times: list[float] = field(default_factory=list)
    found: list[np.ndarray] = field(default_factory=list)

    def ms(self, q: float) -> float:
        return float(np.percentile(self.times, q) * 1000.0)


def make_cases(ivf: IVFIndex, adc: ADCIndex, nprobes: list[int], reranks: list[int | None]) -> list[Case]:
    cases = []
    for rerank in reranks:
        cases.append(Case("exhaustive ADC", None, rerank, lambda q, r=rerank: adc.search(q, K, rerank=r)[1]))
        for p in nprobes:
            cases.append(Case(f"IVF nprobe {p}", p, rerank, lambda q, r=rerank, p=p: ivf.search(q, K, rerank=r, nprobe=p)[1]))
    return cases


def measure(cases: list[Case], queries: np.ndarray, repeats: int) -> None:
    """Batch-1 single-thread wall times, interleaved query by query over the cases."""
    singles = [np.ascontiguousarray(queries[i : i + 1]) for i in range(len(queries))]
    with threads(1):
        for q in singles[:WARMUP_QUERIES]:
            for case in cases:
                case.search(q)
        for round_ in range(repeats):
            started = time.perf_counter()
            for i, q in enumerate(singles):
                for case in cases:
                    t0 = time.perf_counter()
                    ids = case.search(q)
                    case.times.append(time.perf_counter() - t0)
                    if round_ == 0:
                        case.found.append(ids[0])
                if i == 9 and round_ == 0:
                    per = (time.perf_counter() - started) / 10
                    print(f"  timing: {per:.2f} s per query over {len(cases)} cases, about "
                          f"{fmt_s(per * len(singles) * repeats)} in all", flush=True)  # fmt: skip


# --------------------------------------------------------------------------- report


def list_sizes(ivf: IVFIndex) -> np.ndarray | None:
    """Items per inverted list (reads the FAISS index inside IVFIndex; None if that changes)."""
    try:
        lists = ivf._ivf.invlists
        return np.array([lists.list_size(i) for i in range(ivf.nlist)], dtype=np.int64)
    except Exception:  # noqa: BLE001 - a private detail: report n/a rather than fail the run
        return None


def report(args, n: int, nlist: int, codec: PQVAECodec, source: CodeSource, facts: dict, cases: list[Case],
           sizes: np.ndarray | None, load_before: str, started: datetime, total_s: float) -> str:  # fmt: skip
    rerank_label = {RERANK: f"rerank={RERANK}", None: "rerank=None"}
    lines = [
        f"## IVF at scale: N = {n:,} ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine_facts()}  ",
        f"Load average (1/5/15 min) before: {load_before}; after: {load_average()}. Total wall time {fmt_s(total_s)}; "
        f"peak RSS {facts['peak_rss']:,.0f} MiB.",
        "",
        "**Data (SYNTHETIC)**: CLIP-like 512-d unit vectors from the Gaussian-mixture space of "
        "`bench/search_data.py` (20 classes in a 64-d latent with a decaying spectrum, lifted to 512-d plus "
        f"isotropic noise), drawn {args.chunk:,} at a time by `bench/ivf_scale.py:documents` (the document-view "
        "formula, float32 normals), each chunk encoded and its floats dropped: every item's code is the greedy "
        f"encoding of its own vector. Queries: {args.queries} held-out "
        + ("query-view vectors (`search_data.queries`: a second noisy view plus the modality gap)" if args.query_view == "text"
           else "document-view vectors (a disjoint seed stream)")
        + ".",
        "",
        f"**Codec**: PQVAECodec M={codec.num_subvectors} K={codec.codebook_size} ({codec.num_subvectors} B codes), "
        "the search_speed.py timing codec (2,000 training vectors, k-means init, no refinement, beam 1), "
        f"hash {codec.content_hash[:12]}; encoding {'bfloat16' if native_bfloat16() else 'float32'} products.",
    ]
    if source.cached_chunks < source.chunks:
        made = (source.chunks - source.cached_chunks) * args.chunk
        lines.append(
            f"Codes made in this run: {made:,} items, generation {fmt_s(source.generate_s)}, encoding "
            f"{fmt_s(source.encode_s)} = {made / max(source.encode_s, 1e-9):,.0f} vectors/s "
            f"({args.build_threads} thread(s)); {source.cached_chunks} chunk(s) from the cache."
        )
    else:
        lines.append(f"Codes: all {source.chunks} chunks from the cache (`bench/.cache/ivf_scale/`), loaded in {fmt_s(source.load_s)}.")
    if source.recorded_items:
        lines.append(
            f"As recorded when made ({source.recorded_items:,} items): generation {fmt_s(source.recorded_generate_s)}, "
            f"encoding {fmt_s(source.recorded_encode_s)} = "
            f"{source.recorded_items / max(source.recorded_encode_s, 1e-9):,.0f} vectors/s."
        )
    lines += [
        "",
        f"**Indexes** ({args.build_threads} build thread(s)): IVFIndex nlist {nlist} "
        f"({'default_nlist(N)' if args.nlist is None else '--nlist'}), built in {fmt_s(facts['ivf_build_s'])}, "
        f"{facts['ivf_bpi']:.1f} B/item (IVFIndex.bytes_per_item); exhaustive ADCIndex (IndexPQ layout) built in "
        f"{fmt_s(facts['adc_build_s'])}, {facts['adc_bpi']:.1f} B/item. Process RSS (peak so far) after the codes "
        f"{facts['rss_codes']:,.0f} ({facts['peak_codes']:,.0f}) MiB, after the IVF build {facts['rss_ivf']:,.0f} "
        f"({facts['peak_ivf']:,.0f}) MiB, after the ADC build {facts['rss_adc']:,.0f} ({facts['peak_adc']:,.0f}) MiB.",
    ]
    if sizes is not None:
        nonzero = int((sizes > 0).sum())
        lines.append(
            f"List sizes: min {sizes.min():,}, median {int(np.median(sizes)):,}, max {sizes.max():,} "
            f"(mean {n / nlist:,.0f}; {nlist - nonzero} empty); the 1 % largest lists hold "
            f"{np.sort(sizes)[::-1][: max(1, nlist // 100)].sum() / n:.1%} of the items."
        )
    samples = len(cases[0].times)
    lines += [
        "",
        f"**Measured**: `index.search(q, k={K}, rerank=R[, nprobe=P])` per query, batch 1, 1 thread (FAISS OpenMP and "
        f"BLAS limited together), {args.repeats} round(s) over the {args.queries} queries ({samples} timed calls per case), "
        f"interleaved query by query over all cases after {WARMUP_QUERIES} untimed warm-up queries; p50/p99 are "
        "percentiles of those wall times (the query transform, FAISS scan and re-rank included; with 200 samples p99 is "
        "about the second-slowest call, noisy on a shared machine: --repeats adds samples). "
        f"10-R@10 vs exhaustive: mean overlap of each query's IVF top-{K} with the exhaustive ADCIndex top-{K} at the "
        f"same rerank setting (rerank=R: the best R ADC candidates re-scored by exact cosine of the decoded codes; "
        f"rerank=None: plain ADC scores). Scanned: nprobe / nlist, the expected fraction of items a query scans.",
        "",
        "| rerank | search | nprobe | scanned | 10-R@10 vs exhaustive | p50 ms | p99 ms | exhaustive p50 / this p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdict = []
    for rerank in dict.fromkeys(c.rerank for c in cases):
        group = [c for c in cases if c.rerank == rerank]
        exhaustive = group[0]
        truth = np.stack(exhaustive.found)
        passing = []
        for case in group:
            recall = 1.0 if case is exhaustive else recall_at_k(np.stack(case.found), truth, K)
            scanned = "100 %" if case.nprobe is None else f"{min(case.nprobe, nlist) / nlist:.2%}"
            lines.append(
                f"| {rerank_label[rerank]} | {case.name} | {case.nprobe or '–'} | {scanned} | {recall:.3f} | "
                f"{case.ms(50):.3f} | {case.ms(99):.3f} | {exhaustive.ms(50) / case.ms(50):.1f}x |"
            )
            if case is not exhaustive:
                ok = case.ms(50) <= TARGET_MS and recall >= TARGET_RECALL
                if ok:
                    passing.append(case.nprobe)
                if case.nprobe == DEFAULT_NPROBE:
                    verdict.append(
                        f"- {rerank_label[rerank]}, the product default nprobe {DEFAULT_NPROBE}: 10-R@10 {recall:.3f}, "
                        f"p50 {case.ms(50):.3f} ms, p99 {case.ms(99):.3f} ms: {'meets' if ok else 'misses'} the target."
                    )
        if passing:
            verdict.append(
                f"- {rerank_label[rerank]}: nprobe {', '.join(map(str, passing))} meet(s) both (the smallest, "
                f"nprobe {passing[0]}, is the one to choose)."
            )
        else:
            verdict.append(f"- {rerank_label[rerank]}: no measured nprobe meets both.")
    lines += [
        "",
        f"**Target** (issue #15, stated for N = 10^7): IVF p50 <= {TARGET_MS:g} ms single-thread and 10-R@10 >= "
        f"{TARGET_RECALL} against the exhaustive ADC result. At N = {n:,}"
        + ("" if n == FULL_N else " (NOT the target's N: indicative only)")
        + ":",
        "",
        *verdict,
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=float, help=f"items (default {FULL_N:,}; --quick {QUICK_N:,})")
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_N:,}")
    parser.add_argument("--queries", type=int, default=200, help="held-out queries (default 200)")
    parser.add_argument("--query-view", choices=("text", "doc"), default="text",
                        help="text: query-view vectors with the modality gap (default); doc: document-view vectors")  # fmt: skip
    parser.add_argument("--nprobe", type=int, nargs="+", default=list(NPROBES), help="nprobe values (default 8 16 32 64 128)")
    parser.add_argument("--nlist", type=int, help="IVF lists (default default_nlist(N))")
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds over the queries (default 1)")
    parser.add_argument("--chunk", type=int, default=CHUNK, help=f"items generated and encoded at a time (default {CHUNK:,})")
    parser.add_argument("--build-threads", type=int, default=1,
                        help="threads for encoding and index builds (default 1: on the shared 2-core machine 2 threads "
                             "encoded at half the speed; searches always run on 1)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    n = int(args.n) if args.n else (QUICK_N if args.quick else FULL_N)
    if n < 1000 or args.queries < 1 or args.repeats < 1 or args.chunk < 1:
        parser.error("need --n >= 1000 and positive --queries, --repeats and --chunk")
    started, t_start, load_before = datetime.now(UTC), time.perf_counter(), load_average()
    print(f"IVF scale: N = {n:,}, load average {load_before}", flush=True)

    t0 = time.perf_counter()
    with threads(args.build_threads):
        codec = search_data.codec("pq16x8")
    print(f"codec ready in {fmt_s(time.perf_counter() - t0)} (M={codec.num_subvectors}, K={codec.codebook_size})", flush=True)
    codes, source = codes_for(codec, n, args.chunk, args.build_threads)
    facts: dict = {"rss_codes": rss_mib(), "peak_codes": peak_rss_mib()}
    ids = np.arange(n, dtype=np.int64)

    nlist = args.nlist or default_nlist(n)
    print(f"building IVFIndex (nlist {nlist}) ...", flush=True)
    with threads(args.build_threads):
        t0 = time.perf_counter()
        ivf = IVFIndex.build(codec, ids, codes, nlist=nlist)
        facts["ivf_build_s"] = time.perf_counter() - t0
    facts["rss_ivf"], facts["peak_ivf"], facts["ivf_bpi"] = rss_mib(), peak_rss_mib(), ivf.bytes_per_item
    print(f"  IVF built in {fmt_s(facts['ivf_build_s'])}, {facts['ivf_bpi']:.1f} B/item, RSS {facts['rss_ivf']:,.0f} MiB", flush=True)
    with threads(args.build_threads):
        t0 = time.perf_counter()
        adc = ADCIndex.build(codec, ids, codes)
        facts["adc_build_s"] = time.perf_counter() - t0
    facts["rss_adc"], facts["peak_adc"], facts["adc_bpi"] = rss_mib(), peak_rss_mib(), adc.bytes_per_item
    print(f"  ADC built in {fmt_s(facts['adc_build_s'])}, {facts['adc_bpi']:.1f} B/item, RSS {facts['rss_adc']:,.0f} MiB", flush=True)
    del codes, ids
    sizes = list_sizes(ivf)

    nprobes = [p for p in args.nprobe if p <= nlist]
    if len(nprobes) < len(args.nprobe):
        print(f"  nprobe above nlist {nlist} skipped: {[p for p in args.nprobe if p > nlist]}", flush=True)
    queries = query_vectors(args.queries, args.query_view)
    cases = make_cases(ivf, adc, nprobes, [RERANK, None])
    measure(cases, queries, args.repeats)
    facts["peak_rss"] = peak_rss_mib()

    body = report(args, n, nlist, codec, source, facts, cases, sizes, load_before, started, time.perf_counter() - t_start)
    print()
    print(body)
    if args.out:
        args.out.write_text(body + "\n", encoding="utf-8")
        print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
