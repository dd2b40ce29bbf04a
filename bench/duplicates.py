"""Near-duplicate join benchmark: ``semstore.duplicates.find_duplicates`` at 10^5 and 10^6 items.

What runs, for each ``--items`` N, in one process:

1. **Codec**: the 512-d, 16 sub-vector x 8-bit (16-byte codes) ``PQVAECodec`` of the search
   benches (``search_data.codec("pq16x8")``: 2,000 SYNTHETIC CLIP-like training vectors, k-means
   init, no refinement, greedy encoding; cached in ``bench/.cache/search/``). The join's cost
   does not depend on the codec's quality; the planted pairs' similarities do (step 2).
2. **Codes**: N items, of which ``--copies`` (default 1 %) are planted near-duplicate copies.
   The others get uniformly random codes. Each copy takes a random item's codes (drawn with
   replacement, so a few items get two copies: groups of three) and changes 1 or 2 of its 16
   sub-vector codes (half each) to one of the 4 codewords of that sub-vector whose decoded
   contributions lie nearest to the current one (a small step, as when a slightly changed
   embedding flips a code). Rows are shuffled; ids are 1..N. Each planted pair's exact decoded
   cosine is computed (decoding just those items): a pair is *findable* when it reaches the
   threshold; others (a changed code can move the vector a lot) are reported apart.
3. **Index**: ``ADCIndex.build(codec, ids, codes)``, the exhaustive index a collection holds
   (IndexPQ layout), timed with the process RSS after it.
4. **Join**: ``find_duplicates(index, threshold, neighbours, nprobe, batch)`` with the library
   defaults unless told (threshold 0.90, 10 neighbours, nprobe 8, batches of 512). Above
   ``IVF_ABOVE`` (50,000) items it builds a temporary ``IVFIndex`` (nlist about sqrt(N)) over the
   same codes, which is timed on its own (by wrapping ``semstore.duplicates._temporary_ivf``).
   Wall time of the whole call, and RAM: the RSS before the call and the peak during it (Linux:
   the kernel's peak-RSS counter ``VmHWM`` reset through ``/proc/self/clear_refs`` just before
   the call; where that is refused, a thread sampling ``VmRSS`` every 5 ms), so "peak growth"
   is what the call itself added on top of the loaded index.
5. **Quality**: recall of the findable planted pairs (both items in one returned group), how
   many groups are exactly one planted family, and how many items were grouped that belong to
   no planted family (random codes that happen to be >= the threshold apart).

Threads: ``--threads`` (default: all cores) for FAISS's OpenMP and BLAS together.

Usage::

    python bench/duplicates.py --items 100000
    python bench/duplicates.py                          # 10^5 and 10^6
    python bench/duplicates.py --items 1000000 --nprobe 16 --out /tmp/duplicates_1e6.md
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

from bench import search_data  # noqa: E402
from bench.report import command_line, load_average, machine_facts  # noqa: E402
from bench.report import limit_threads as threads  # noqa: E402
from semstore import duplicates  # noqa: E402
from semstore.codec import PQVAECodec  # noqa: E402
from semstore.index import ADCIndex  # noqa: E402
from semstore.index.ivf import default_nlist  # noqa: E402

DEFAULT_ITEMS = (100_000, 1_000_000)
NEAREST_CODEWORDS = 4


# --------------------------------------------------------------------------- memory


def _status_mib(field: str) -> float:
    """A ``/proc/self/status`` figure (VmRSS, VmHWM) in MiB; nan where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mib() -> float:
    return _status_mib("VmRSS")


@contextmanager
def peak_rss() -> Iterator[dict[str, float | str]]:
    """The peak RSS (MiB) while the block runs, in ``result["peak"]``, and how it was measured."""
    result: dict[str, float | str] = {}
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        method = "VmHWM after /proc/self/clear_refs"
    except OSError:
        method = "VmRSS sampled every 5 ms"
    stop = threading.Event()
    samples = [rss_mib()]

    def sample() -> None:
        while not stop.wait(0.005):
            samples.append(rss_mib())

    sampler = threading.Thread(target=sample, daemon=True) if method.startswith("VmRSS") else None
    if sampler is not None:
        sampler.start()
    try:
        yield result
    finally:
        stop.set()
        if sampler is not None:
            sampler.join()
        samples.append(rss_mib())
        result["peak"] = max(samples) if sampler is not None else _status_mib("VmHWM")
        result["method"] = method


# --------------------------------------------------------------------------- data


def nearest_codewords(codec: PQVAECodec, count: int = NEAREST_CODEWORDS) -> np.ndarray:
    """(M, K, count): per sub-vector, the codewords whose decoded contribution is nearest to each one's.

    Decoding is linear in the per-sub-vector contributions, so decoding codes that differ only
    in sub-vector m gives those contributions up to one shared offset.
    """
    m, k = codec.num_subvectors, codec.codebook_size
    out = np.empty((m, k, count), dtype=np.int64)
    for position in range(m):
        codes = np.zeros((k, m), dtype=np.int64)
        codes[:, position] = np.arange(k)
        vectors = codec.decode(codes, normalize=False).astype(np.float64)
        squared = (vectors**2).sum(axis=1)
        distance = squared[:, None] + squared[None, :] - 2 * vectors @ vectors.T
        np.fill_diagonal(distance, np.inf)
        out[position] = np.argsort(distance, axis=1)[:, :count]
    return out


@dataclass
class Planted:
    codes: np.ndarray  # (N, M), row i is item id i + 1
    pairs: np.ndarray  # (P, 2) item ids: (original, copy)
    changed: np.ndarray  # (P,) sub-vector codes changed in the copy (1 or 2)


def planted_codes(codec: PQVAECodec, n: int, copies: float, rng: np.random.Generator) -> Planted:
    """N codes: random ones and ``copies * N`` near-duplicate copies of random items among them."""
    m, k = codec.num_subvectors, codec.codebook_size
    n_copies = round(n * copies)
    base = rng.integers(0, k, (n, m), dtype=np.int64).astype(codec.code_dtype)
    originals = rng.integers(0, n - n_copies, n_copies)
    changed = rng.integers(1, 3, n_copies)
    nearest = nearest_codewords(codec)
    rows = np.arange(n_copies)
    copied = base[originals].astype(np.int64)
    first = rng.integers(0, m, n_copies)
    second = (first + rng.integers(1, m, n_copies)) % m  # another sub-vector
    for positions, used in ((first, np.ones(n_copies, dtype=bool)), (second, changed == 2)):
        picked = nearest[positions, copied[rows, positions], rng.integers(0, NEAREST_CODEWORDS, n_copies)]
        copied[rows, positions] = np.where(used, picked, copied[rows, positions])
    base[n - n_copies :] = copied.astype(codec.code_dtype)
    order = rng.permutation(n)  # row order[j] goes to position j: item id j + 1
    position_of = np.empty(n, dtype=np.int64)
    position_of[order] = np.arange(n)
    pairs = np.stack([position_of[originals], position_of[n - n_copies + rows]], axis=1) + 1
    return Planted(np.ascontiguousarray(base[order]), pairs, changed)


def pair_cosines(codec: PQVAECodec, codes: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Exact decoded cosine of each (id, id) pair."""
    left = codec.decode(codes[pairs[:, 0] - 1], normalize=True)
    right = codec.decode(codes[pairs[:, 1] - 1], normalize=True)
    return np.einsum("nd,nd->n", left, right)


# --------------------------------------------------------------------------- measurement


@dataclass
class Row:
    n: int
    generate_s: float
    index_build_s: float
    rss_index_mib: float
    nlist: int | None
    ivf_build_s: float
    join_s: float
    rss_before_mib: float
    peak_mib: float
    peak_method: str
    groups: int
    grouped_items: int
    planted_pairs: int
    findable: int
    recall: float
    found_unfindable: int
    exact_families: int
    families: int
    foreign_items: int
    cos_min: float
    cos_median: float


def run(n: int, codec: PQVAECodec, args: argparse.Namespace) -> Row:
    print(f"N = {n:,}: generating codes", flush=True)
    t0 = time.perf_counter()
    planted = planted_codes(codec, n, args.copies, np.random.default_rng([args.seed, n]))
    generate_s = time.perf_counter() - t0
    ids = np.arange(1, n + 1, dtype=np.int64)
    t0 = time.perf_counter()
    index = ADCIndex.build(codec, ids, planted.codes)
    index_build_s = time.perf_counter() - t0
    rss_index = rss_mib()
    print(f"  index built in {index_build_s:.1f} s, RSS {rss_index:,.0f} MiB; joining", flush=True)

    ivf_seconds: list[float] = []
    original = duplicates._temporary_ivf

    def timed_ivf(*a: object, **kw: object) -> object:
        started = time.perf_counter()
        built = original(*a, **kw)  # type: ignore[arg-type]
        ivf_seconds.append(time.perf_counter() - started)
        return built

    duplicates._temporary_ivf = timed_ivf  # type: ignore[assignment]
    try:
        before = rss_mib()
        with peak_rss() as peak:
            t0 = time.perf_counter()
            groups = duplicates.find_duplicates(
                index, threshold=args.threshold, neighbours=args.neighbours, nprobe=args.nprobe,
                batch=args.batch, progress=args.progress,
            )  # fmt: skip
            join_s = time.perf_counter() - t0
    finally:
        duplicates._temporary_ivf = original  # type: ignore[assignment]
    print(f"  joined in {join_s:.1f} s: {len(groups):,} groups", flush=True)

    cosines = pair_cosines(codec, planted.codes, planted.pairs)
    findable = cosines >= args.threshold - duplicates.SCORE_TOLERANCE
    group_of = np.zeros(n + 1, dtype=np.int64)  # 0: in no group
    for number, group in enumerate(groups, 1):
        group_of[list(group.ids)] = number
    together = (group_of[planted.pairs[:, 0]] > 0) & (group_of[planted.pairs[:, 0]] == group_of[planted.pairs[:, 1]])
    families = _families(planted.pairs[findable])
    found_sets = {group.ids for group in groups}
    planted_items = set(planted.pairs.ravel().tolist())
    grouped = [i for group in groups for i in group.ids]
    return Row(
        n=n, generate_s=generate_s, index_build_s=index_build_s, rss_index_mib=rss_index,
        nlist=default_nlist(n) if n > duplicates.IVF_ABOVE else None,
        ivf_build_s=sum(ivf_seconds), join_s=join_s, rss_before_mib=before,
        peak_mib=float(peak["peak"]), peak_method=str(peak["method"]),
        groups=len(groups), grouped_items=len(grouped),
        planted_pairs=len(planted.pairs), findable=int(findable.sum()),
        recall=float(together[findable].mean()) if findable.any() else float("nan"),
        found_unfindable=int(together[~findable].sum()),
        exact_families=sum(1 for family in families if family in found_sets), families=len(families),
        foreign_items=sum(1 for i in grouped if i not in planted_items),
        cos_min=float(cosines.min()), cos_median=float(np.median(cosines)),
    )  # fmt: skip


def _families(pairs: np.ndarray) -> list[tuple[int, ...]]:
    """The connected sets of the given (original, copy) pairs, as sorted id tuples."""
    if len(pairs) == 0:
        return []
    return [group.ids for group in duplicates.group_pairs(pairs[:, 0], pairs[:, 1], np.ones(len(pairs)))]


# --------------------------------------------------------------------------- report


def report(rows: list[Row], args: argparse.Namespace, load_before: str) -> str:
    lines = [
        "# Near-duplicate join (`find_duplicates`)",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine_facts()}  ",
        f"Load average before: {load_before}, after: {load_average()}  ",
        (
            f"Threads: {args.threads} (FAISS OpenMP and BLAS). Settings: threshold {args.threshold}, "
            f"neighbours {args.neighbours}, nprobe {args.nprobe or duplicates.DEFAULT_NPROBE}, batch {args.batch}, "
            f"IVF above {duplicates.IVF_ABOVE:,} items (temporary IVFIndex, nlist = default_nlist(N))."
        ),
        "",
        (
            "Data: 16-byte codes (16 x 8-bit, 512-d codec `search_data.codec('pq16x8')`), uniformly random except "
            f"{args.copies:.1%} planted copies, each differing from a random item in 1 or 2 sub-vector codes "
            f"(one of the {NEAREST_CODEWORDS} nearest codewords of that sub-vector). Findable: planted pairs whose exact "
            "decoded cosine reaches the threshold. RAM: RSS before the call (the loaded index and the codes) and the "
            "peak during it; growth = what the call added."
        ),
        "",
        (
            "| N | join wall | of which temp. IVF build | nlist | RSS before | peak RSS | peak growth | groups | "
            "planted pairs | findable | recall (findable) | unfindable grouped anyway | planted families found exactly | "
            "non-planted items grouped |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.n:,} | {r.join_s:.1f} s | {r.ivf_build_s:.1f} s | {r.nlist or '- (exhaustive)'} | "
            f"{r.rss_before_mib:,.0f} MiB | {r.peak_mib:,.0f} MiB | {r.peak_mib - r.rss_before_mib:+,.0f} MiB | {r.groups:,} | "
            f"{r.planted_pairs:,} | {r.findable:,} ({r.findable / max(r.planted_pairs, 1):.0%}) | {r.recall:.4f} | "
            f"{r.found_unfindable:,} | {r.exact_families:,} of {r.families:,} | {r.foreign_items:,} |"
        )
    lines += ["", "Other timings:"]
    for r in rows:
        lines.append(
            f"- N = {r.n:,}: codes generated in {r.generate_s:.1f} s; ADCIndex built in {r.index_build_s:.1f} s "
            f"(RSS {r.rss_index_mib:,.0f} MiB after); {r.join_s / r.n * 1e6:.1f} us per item joined; planted pairs' "
            f"decoded cosine min {r.cos_min:.3f}, median {r.cos_median:.3f}; peak measured by {r.peak_method}."
        )
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        growth = np.log(b.join_s / a.join_s) / np.log(b.n / a.n)
        lines.append(f"- Join time grows as N^{growth:.2f} from {a.n:,} to {b.n:,} items.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=list(DEFAULT_ITEMS), help="N values (default 100000 1000000)")
    parser.add_argument("--copies", type=float, default=0.01, help="fraction of the N items that are planted copies (default 0.01)")
    parser.add_argument("--threshold", type=float, default=duplicates.DEFAULT_THRESHOLD)
    parser.add_argument("--neighbours", type=int, default=duplicates.DEFAULT_NEIGHBOURS)
    parser.add_argument("--nprobe", type=int, default=None, help=f"lists probed (default {duplicates.DEFAULT_NPROBE})")
    parser.add_argument("--batch", type=int, default=duplicates.DEFAULT_BATCH)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="show the join's progress bar")
    parser.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    load_before = load_average()
    codec = search_data.codec("pq16x8")
    rows = []
    with threads(args.threads):
        for n in args.items:
            rows.append(run(n, codec, args))
    text = report(rows, args, load_before)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
