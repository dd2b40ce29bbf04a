"""Encoding throughput and quality of PQVAECodec against the beam width of its search.

The codec's target (issue 3): encode at least 20,000 vectors/s on 2 cores, so that it is
never the bottleneck of ingest. This bench measures, in one process:

* **data**: REAL all-MiniLM-L6-v2 embeddings of Python docstrings (``bench/datasets.py``),
  20,000 train / 5,000 test, seed 0 (``--quick``: 10,000 / 2,000); ``--dataset synthetic``
  uses the CLIP-like generator instead;
* **codec**: the default configuration at ``--bits`` (128: M=16, K=256), fitted on the train
  split once and cached in ``bench/.cache/`` keyed by data, split and configuration;
* **throughput**: ``codec.encode`` of train + test (25,000 vectors) for every beam, with the
  default search (approximate top-k; bfloat16 products where the CPU has them natively, as
  the report says) and with ``exact=True`` (the exact search training runs): one warm-up
  encode, then the median of ``--repeats`` runs (the slowest and fastest runs are printed as well: on a
  shared 2-core machine they differ by up to 30 %), FAISS, torch and BLAS limited to
  ``--threads`` threads together;
* **quality** for every beam, on the test split: relative squared error
  ``||x - x_hat||^2 / ||x - mean||^2`` of the linear reconstruction, 10-recall@10 of the
  ADC ranking (inner product of the paired text queries with the linear reconstruction,
  equal to ADC scores) against exact float search, and paired recall@1 / @10;
* ``--profile``: cProfile of one default encode (``beam_search_encode_step_tab`` is FAISS's
  beam kernel, called once per stage; the matrix products run in ``LutBeamSearch._products``).

Usage::

    python bench/encode_speed.py --quick
    python bench/encode_speed.py [--beams 1 2 4 6 8 12 16] [--bits 128] [--profile] [--no-write]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import pstats
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from bench.datasets import EmbeddingDataset, load_minilm_docstrings, make_synthetic_clip_like  # noqa: E402
from bench.metrics import exact_topk_inner_product, paired_recall, recall_at_k  # noqa: E402
from bench.report import CACHE, publish, timed_runs  # noqa: E402
from semstore.codec import PQVAECodec  # noqa: E402
from semstore.codec.lut_search import native_bfloat16  # noqa: E402

K = 10
TARGET_VPS = 20_000


@dataclass(frozen=True)
class BeamRow:
    """Speed and quality of one beam width."""

    beam: int
    approx_vps: float
    approx_range: tuple[float, float]  # slowest, fastest run (vec/s)
    exact_vps: float
    relative_error: float
    recall10: float
    paired_r1: float
    paired_r10: float


def load_data(dataset: str, n_train: int, n_test: int, seed: int) -> EmbeddingDataset:
    if dataset == "synthetic":
        return make_synthetic_clip_like(n_train, n_test, seed=seed)
    return load_minilm_docstrings(n_train, n_test, seed=seed)


def codec_cache_path(data: EmbeddingDataset, codec: PQVAECodec, seed: int, cache: Path = CACHE) -> Path:
    """Where the codec fitted on ``data.train`` with ``codec``'s configuration is kept."""
    identity = {
        "data": data.name,
        "key": data.facts.get("corpus_key"),
        "train": [int(n) for n in data.train.shape],
        "train_head": hashlib.sha256(np.ascontiguousarray(data.train[:64]).tobytes()).hexdigest(),
        "config": codec.config.to_dict(),
        "seed": seed,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache / f"codec-{data.name}-{digest}.safetensors"


def fitted_codec(data: EmbeddingDataset, bits: int, seed: int, cache: Path = CACHE) -> tuple[PQVAECodec, float | None]:
    """The default codec at ``bits`` (K=256) fitted on the train split; (codec, fit seconds or None if cached)."""
    if bits % 8:
        raise SystemExit(f"encode_speed: --bits must be a multiple of 8 (K=256), got {bits}")
    codec = PQVAECodec(dim=data.dim, num_subvectors=bits // 8, codebook_size=256)
    path = codec_cache_path(data, codec, seed, cache)
    if path.is_file():
        return PQVAECodec.load(path), None
    start = time.perf_counter()
    codec.fit(data.train, seed=seed)
    seconds = time.perf_counter() - start
    codec.save(path)
    return codec, seconds


def beam_quality(codec: PQVAECodec, data: EmbeddingDataset, truth: np.ndarray, beam: int) -> tuple[float, float, float, float]:
    """(relative squared error, 10-R@10, paired R@1, paired R@10) of the test split coded at ``beam``."""
    codes = codec.encode(data.test, beam_size=beam)
    recon = codec.decode(codes, normalize=False)
    centred = data.test - codec.mean
    relative = float(np.sum((data.test - recon) ** 2) / np.sum(centred**2))
    found = exact_topk_inner_product(data.test_queries, recon, K)
    targets = np.arange(data.test.shape[0])
    return relative, recall_at_k(found, truth, K), paired_recall(found, targets, 1), paired_recall(found, targets, K)


def measure(codec: PQVAECodec, data: EmbeddingDataset, beams: list[int], repeats: int) -> list[BeamRow]:
    vectors = np.concatenate([data.train, data.test])
    truth = exact_topk_inner_product(data.test_queries, data.test, K)
    rows = []
    for beam in beams:
        approx = _throughput(lambda: codec.encode(vectors, beam_size=beam), len(vectors), repeats)
        exact = _throughput(lambda: codec.encode(vectors, beam_size=beam, exact=True), len(vectors), repeats)
        quality = beam_quality(codec, data, truth, beam)
        rows.append(BeamRow(beam, approx[0], (approx[1], approx[2]), exact[0], *quality))
        print(f"[beam {beam:>2}] {approx[0]:,.0f} vec/s (runs {approx[1]:,.0f}-{approx[2]:,.0f}; exact search "
              f"{exact[0]:,.0f}); rel. error {quality[0]:.4f}, 10-R@10 {quality[1]:.4f}, pR@1 {quality[2]:.4f}, "
              f"pR@10 {quality[3]:.4f}", flush=True)
    return rows


def _throughput(run, count: int, repeats: int) -> tuple[float, float, float]:
    """(median, slowest, fastest) vectors/s of ``run`` over ``repeats`` runs after one warm-up."""
    seconds = sorted(timed_runs(run, min_runs=repeats, max_runs=repeats, warmup=True))
    return count / seconds[len(seconds) // 2], count / seconds[-1], count / seconds[0]


def profile_encode(codec: PQVAECodec, vectors: np.ndarray, top: int = 12) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    codec.encode(vectors)
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(top)
    return stream.getvalue()


def format_report(rows: list[BeamRow], codec: PQVAECodec, data: EmbeddingDataset, threads: int,
                  fit_s: float | None, n_vectors: int) -> str:
    default = codec.config.beam_size
    lines = [
        f"Data: {data.description}; train {data.train.shape}, test {data.test.shape}.",
        f"Codec: {codec!r}, default beam {default}; fitted "
        + (f"in {fit_s:.0f} s" if fit_s is not None else "earlier (loaded from bench/.cache)") + ".",
        f"Throughput: encode of {n_vectors:,} vectors (train + test), median of repeats, {threads} threads "
        "(FAISS OpenMP, torch and BLAS limited together), after one warm-up encode. Default search: approximate top-k, "
        + ("bfloat16 products (this CPU has native bfloat16)" if native_bfloat16() else "float32 products (no native bfloat16 here)")
        + "; quality is that of the default search, on the test split. 10-R@10 and paired recall "
        "rank the paired text queries by inner product with the linear reconstruction (= ADC scores).",
        "",
        "| beam | vec/s (default search) | slowest-fastest run | vec/s (exact search) | rel. sq. error | 10-R@10 "
        "| paired R@1 | paired R@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = " (default)" if r.beam == default else ""
        lines.append(f"| {r.beam}{mark} | {r.approx_vps:,.0f} | {r.approx_range[0]:,.0f}-{r.approx_range[1]:,.0f} "
                     f"| {r.exact_vps:,.0f} | {r.relative_error:.4f} "
                     f"| {r.recall10:.4f} | {r.paired_r1:.4f} | {r.paired_r10:.4f} |")
    chosen = [r for r in rows if r.beam == default]
    if chosen:
        met = "met" if chosen[0].approx_vps >= TARGET_VPS else "NOT met"
        lines += ["", f"Target >= {TARGET_VPS:,} vec/s at the default beam {default}: {met} "
                      f"({chosen[0].approx_vps:,.0f} vec/s)."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 train / 2,000 test, beams 1 4 8 16")
    parser.add_argument("--dataset", choices=("minilm", "synthetic"), default="minilm")
    parser.add_argument("--bits", type=int, default=128, help="bits per vector (K=256, so M = bits / 8)")
    parser.add_argument("--beams", type=int, nargs="+", default=None, help="beam widths (default 1 2 4 6 8 12 16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed encodes per beam and top-k mode")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="cProfile one default encode")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    if args.beams is None:
        args.beams = [1, 4, 8, 16] if args.quick else [1, 2, 4, 6, 8, 12, 16]
    if any(b < 1 for b in args.beams) or args.repeats < 1 or args.threads < 1:
        parser.error("beams, --repeats and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n_train, n_test = (10_000, 2_000) if args.quick else (20_000, 5_000)
    data = load_data(args.dataset, n_train, n_test, args.seed)
    with threadpool_limits(limits=args.threads):
        import faiss
        import torch

        faiss.omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
        codec, fit_s = fitted_codec(data, args.bits, args.seed)
        rows = measure(codec, data, sorted(set(args.beams)), args.repeats)
        profile = profile_encode(codec, np.concatenate([data.train, data.test])) if args.profile else None
    report = format_report(rows, codec, data, args.threads, fit_s, n_train + n_test)
    if profile:
        report += "\n\ncProfile of one default encode (tottime order):\n\n```\n" + profile.strip() + "\n```"
    publish("Codec encoding speed vs beam" + (" (quick)" if args.quick else ""), report, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
