"""Fit time of the default PQVAECodec against the number of training vectors and the code size.

Issue 20's target: fitting 20,000 x 384 real vectors takes at most 3 minutes at 128 bits and
at most 6 minutes at 256 bits with 2 threads, and the time grows at most linearly with M
(the number of codes per vector). This bench measures, in one process:

* **data**: REAL all-MiniLM-L6-v2 (384-d) embeddings of Python docstrings
  (``bench/datasets.py``): both views of every item, the docstring body (document) and its
  summary line (query), about 53,000 vectors. ``--test`` items (default 1,500, drawn with
  ``--seed``) are held out with both views; the training sets of every size are prefixes of
  one shuffled pool of the remaining vectors, so the 50,000 set contains the 20,000 one;
* **fit**: ``PQVAECodec(dim=384, num_subvectors=bits/8)`` with every other option at its
  default (as ``Database.new_codec`` builds it), ``fit(X, seed=0, progress=False)``, wall
  time of that call alone (data loading excluded), FAISS, torch and BLAS limited to
  ``--threads`` threads (default 2); the report's own split of the time (initialisation,
  refinement, final encoding) is printed next to it;
* **quality** on the held-out documents: relative squared error of the linear reconstruction
  ``||x - x_hat||^2 / ||x||^2``, the mean cosine of the decoded (normalised) vector with the
  original, 10-recall@10 of the ADC ranking of the held-out queries over the held-out
  documents against exact float search, and paired recall@1 / @10 (each query's own
  document in the ADC top-1 / top-10).

Usage::

    python bench/fit_time.py                       # 5k / 20k / 50k x 128 / 256 bits
    python bench/fit_time.py --sizes 20000 --bits 128
    python bench/fit_time.py --write               # also append the table to bench/RESULTS.md

Each finished row is also printed at once as one JSON line (``--jsonl PATH`` appends them to a
file), so a long run killed part-way still leaves its measured rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from bench.metrics import exact_topk_inner_product, paired_recall, recall_at_k  # noqa: E402
from bench.report import load_average, publish  # noqa: E402
from semstore.codec import PQVAECodec  # noqa: E402

K = 10
TARGETS_S = {(20_000, 128): 180.0, (20_000, 256): 360.0}


@dataclass(frozen=True)
class Split:
    pool: np.ndarray  # training pool, shuffled
    test_docs: np.ndarray
    test_queries: np.ndarray
    description: str


@dataclass(frozen=True)
class FitRow:
    vectors: int
    bits: int
    m: int
    fit_s: float
    phases: dict[str, float]
    iterations: int
    best_iteration: int
    held_out_error: float | None  # the fit's own held-out error (working space)
    test_rel_error: float
    test_cosine: float
    recall10: float
    paired_r1: float
    paired_r10: float
    load_before: float
    load_after: float


def split_vectors(docs: np.ndarray, queries: np.ndarray, n_test: int, seed: int, description: str = "") -> Split:
    """Hold out ``n_test`` items (both views); shuffle every other vector into one pool."""
    if docs.shape != queries.shape:
        raise ValueError(f"documents {docs.shape} and queries {queries.shape} must pair up")
    rng = np.random.default_rng(seed)
    order = rng.permutation(docs.shape[0])
    test, rest = order[:n_test], order[n_test:]
    pool = np.concatenate([docs[rest], queries[rest]])
    pool = pool[rng.permutation(pool.shape[0])]
    return Split(np.ascontiguousarray(pool), docs[test], queries[test], description)


def load_split(n_test: int, seed: int) -> Split:
    from bench.datasets import embed_docstring_corpus

    corpus = embed_docstring_corpus()
    text = (
        f"REAL: all-MiniLM-L6-v2 (384-d) embeddings of {len(corpus.items):,} Python docstrings, both views "
        f"(body and summary line) pooled; {n_test:,} items held out with both views (seed {seed})"
    )
    return split_vectors(corpus.documents, corpus.queries, n_test, seed, text)


def quality(codec: PQVAECodec, docs: np.ndarray, queries: np.ndarray) -> tuple[float, float, float, float, float]:
    """(relative squared error, mean cosine, 10-R@10, paired R@1, paired R@10) on held-out data."""
    codes = codec.encode(docs)
    linear = codec.decode(codes, normalize=False)
    rel = float(np.mean(np.sum((docs - linear) ** 2, axis=1) / np.maximum(np.sum(docs * docs, axis=1), 1e-12)))
    unit = codec.decode(codes)
    cosine = float(np.mean(np.sum(unit * docs, axis=1) / np.maximum(np.linalg.norm(docs, axis=1), 1e-12)))
    truth = exact_topk_inner_product(queries, docs, K)
    scores = queries @ linear.T  # = ADC scores
    found = np.argsort(-scores, axis=1)[:, :K]
    targets = np.arange(docs.shape[0])
    return rel, cosine, recall_at_k(found, truth, K), paired_recall(found, targets, 1), paired_recall(found, targets, K)


def fit_one(split: Split, vectors: int, bits: int, seed: int = 0) -> FitRow:
    if bits % 8:
        raise SystemExit(f"fit_time: bits must be a multiple of 8 (8-bit codes), got {bits}")
    if vectors > split.pool.shape[0]:
        raise SystemExit(f"fit_time: asked for {vectors:,} training vectors, the pool has {split.pool.shape[0]:,}")
    train = split.pool[:vectors]
    codec = PQVAECodec(dim=train.shape[1], num_subvectors=bits // 8)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    codec.fit(train, seed=seed, progress=False)
    fit_s = time.perf_counter() - start
    load_after = os.getloadavg()[0]
    report = codec.report
    rel, cosine, r10, r1, pr10 = quality(codec, split.test_docs, split.test_queries)
    return FitRow(
        vectors=vectors, bits=bits, m=codec.num_subvectors, fit_s=fit_s,
        phases=dict(getattr(report, "phase_seconds", {})), iterations=report.iterations, best_iteration=report.best_iteration,
        held_out_error=report.held_out_error, test_rel_error=rel, test_cosine=cosine,
        recall10=r10, paired_r1=r1, paired_r10=pr10, load_before=load_before, load_after=load_after,
    )


def _phase_text(phases: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.0f}" for name, value in phases.items() if value >= 0.5) or "-"


def format_table(rows: list[FitRow]) -> str:
    lines = [
        "| vectors | bits | M | fit s | target s | where the time went (s) | refinement it. (kept) | "
        "test rel. error | test cosine | 10-R@10 | paired R@1 | paired R@10 | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = TARGETS_S.get((r.vectors, r.bits))
        lines.append(
            f"| {r.vectors:,} | {r.bits} | {r.m} | {r.fit_s:.1f} | {'%.0f' % target if target else '-'} | "
            f"{_phase_text(r.phases)} | {r.iterations} ({r.best_iteration}) | {r.test_rel_error:.4f} | "
            f"{r.test_cosine:.4f} | {r.recall10:.3f} | {r.paired_r1:.3f} | {r.paired_r10:.3f} | "
            f"{r.load_before:.1f} / {r.load_after:.1f} |"
        )
    return "\n".join(lines)


def describe(split: Split, threads: int) -> str:
    return (
        f"Data: {split.description}; pool {split.pool.shape[0]:,} vectors, test {split.test_docs.shape[0]:,} "
        f"documents + their queries.\n"
        f"Fit: `PQVAECodec(dim=384, num_subvectors=bits/8).fit(X, seed=0, progress=False)`, every other option "
        f"at its default; wall time of the fit call alone, {threads} threads (FAISS OpenMP, torch and BLAS limited "
        f"together); 'where the time went' is the fit report's own split. Quality on the held-out documents: "
        f"relative squared error of the linear reconstruction, mean cosine of the decoded vector, 10-R@10 of the "
        f"ADC ranking of the held-out queries against exact float search, paired R@1 / R@10. Load average "
        f"(1 min) before and after each fit: the machine is shared, so a load above {threads} slows the fit."
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000, 50_000])
    p.add_argument("--bits", type=int, nargs="+", default=[128, 256])
    p.add_argument("--test", type=int, default=1_500, help="held-out items (both views are held out)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jsonl", type=Path, default=None, help="append each finished row to this file as JSON")
    p.add_argument("--write", action="store_true", help="append the report to bench/RESULTS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import faiss
    import torch

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    split = load_split(args.test, args.seed)
    print(describe(split, args.threads), flush=True)
    rows: list[FitRow] = []
    with threadpool_limits(limits=args.threads):
        for vectors in args.sizes:
            for bits in args.bits:
                row = fit_one(split, vectors, bits, seed=0)
                rows.append(row)
                line = json.dumps(asdict(row))
                print(line, flush=True)
                if args.jsonl:
                    with args.jsonl.open("a", encoding="utf-8") as out:
                        out.write(line + "\n")
    publish("Codec fit time (bench/fit_time.py)", describe(split, args.threads) + "\n\n" + format_table(rows),
            write=args.write)
    print(f"load avg at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
