"""Codec-quality benchmark: PQVAECodec vs FAISS / binary baselines at equal bits per vector.

Usage::

    python bench/codec_quality.py [--bits 64 128 256] [--train N] [--test N]
                                  [--dataset minilm|wordnet|synthetic|npz ...] [--embeddings FILE.npz]
                                  [--quick] [--out bench/RESULTS.md]

Several ``--dataset`` names run one after the other in one process, each with its own
table. ``--dataset npz`` reads real CLIP image / caption embeddings written by ``bench/embed_clip.py``.

Metrics (one train/test split; the test documents are the compressed database):

* 10-R@10: overlap of the ADC top-10 (float query vs codes, inner product) with the exact
  float top-10, queries = the paired query view of the test items;
* paired R@1 / R@10: the query's own document in the ADC top-1 / top-10;
* zero-shot: accuracy of argmax cosine(decoded, L2-normalised vector, class prompt), and
  its fraction of the float accuracy;
* sizes: fixed-length bits, plug-in entropy of the code symbols (per position), and the
  actual ANS-coded size (constriction; one categorical model per position fitted on
  codes of training vectors);
* train seconds and encode throughput (vectors/s: one encode of the test split, after a
  warm-up encode of a few vectors so that one-time set-up such as the codec's look-up
  tables is not counted; tables before 2026-11-26 02:45 UTC counted it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: import this folder as the ``bench`` package. The script folder is
    # dropped from sys.path so bench/datasets.py cannot shadow the ``datasets`` library.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from bench.baselines import Compressor, FloatBaseline, NeuralRerankBaseline, PQVAEBaseline, build_methods  # noqa: E402
from bench.datasets import (  # noqa: E402
    DatasetError,
    EmbeddingDataset,
    load_minilm_docstrings,
    load_minilm_wordnet,
    load_npz_embeddings,
    make_synthetic_clip_like,
)
from bench.report import cpu_model  # noqa: E402
from bench.metrics import (  # noqa: E402
    coded_size_bits,
    empirical_entropy_bits,
    exact_topk_inner_product,
    paired_recall,
    recall_at_k,
    zero_shot_accuracy,
)

BENCH_DIR = Path(__file__).resolve().parent
K = 10
RERANK_DEPTH = 100
ENTROPY_TRAIN_VECTORS = 10_000
#: Vectors encoded once before the timed encode (set-up such as look-up tables is not throughput).
WARMUP_VECTORS = 64


@dataclass
class Row:
    """One method at one bit budget."""

    method: str
    bits: int
    details: str
    bytes_per_vector: float
    recall10: float
    paired_r1: float
    paired_r10: float
    rerank_recall10: float
    rerank_r1: float
    rerank_r10: float
    zero_shot: float
    zero_shot_frac: float
    entropy_bits: float | None
    coded_bits: float | None
    train_s: float
    encode_vps: float
    rerank_us: float


def evaluate(method: Compressor, data: EmbeddingDataset, truth: np.ndarray,
             float_zero_shot: float | None) -> Row:
    """Fit, encode, search and decode with one method; all metrics of one row."""
    start = time.perf_counter()
    method.fit(data.train)
    train_s = time.perf_counter() - start + getattr(method, "extra_train_s", 0.0)
    method.encode(data.test[:WARMUP_VECTORS])  # one-time set-up (look-up tables) is not throughput
    start = time.perf_counter()
    codes = method.encode(data.test)
    encode_s = time.perf_counter() - start
    _, shortlist = method.search(data.test_queries, codes, RERANK_DEPTH)
    ids = shortlist[:, :K]
    decoded = method.decode(codes)
    reranked = rerank_by_cosine(data.test_queries, shortlist, decoded)
    rerank_us = rerank_cost_us(method, data.test_queries, shortlist, codes)
    zero_shot = zero_shot_accuracy(decoded, data.class_prompts, data.test_labels)
    targets = np.arange(len(data.test))
    entropy = coded = None
    symbols = method.symbols(codes)
    if symbols is not None and method.alphabet_size:
        entropy = empirical_entropy_bits(symbols)
        train_symbols = method.symbols(method.encode(data.train[:ENTROPY_TRAIN_VECTORS]))
        coded = coded_size_bits(train_symbols, symbols, method.alphabet_size)
    return Row(
        method=method.name,
        bits=method.bits,
        details=method.details,
        bytes_per_vector=method.bytes_per_vector(codes),
        recall10=recall_at_k(ids, truth, K),
        paired_r1=paired_recall(ids, targets, 1),
        paired_r10=paired_recall(ids, targets, K),
        rerank_recall10=recall_at_k(reranked, truth, K),
        rerank_r1=paired_recall(reranked, targets, 1),
        rerank_r10=paired_recall(reranked, targets, K),
        zero_shot=zero_shot,
        zero_shot_frac=zero_shot / float_zero_shot if float_zero_shot else 1.0,
        entropy_bits=entropy,
        coded_bits=coded,
        train_s=train_s,
        encode_vps=len(data.test) / max(encode_s, 1e-9),
        rerank_us=rerank_us,
    )


def rerank_cost_us(method: Compressor, queries: np.ndarray, shortlist: np.ndarray, codes: np.ndarray,
                   n_queries: int = 200) -> float:
    """Microseconds per candidate to re-rank a shortlist as a search does: per query, decode
    its candidates' codes, normalise and take the cosine with the query (``n_queries`` queries,
    one at a time, after one warm-up query)."""
    rows = shortlist[: n_queries + 1]

    def one(q: int) -> None:
        ids = rows[q][rows[q] >= 0]
        decoded = method.decode(codes[ids])
        decoded /= np.maximum(np.linalg.norm(decoded, axis=1, keepdims=True), 1e-12)
        decoded @ queries[q]

    one(0)
    start = time.perf_counter()
    for q in range(1, len(rows)):
        one(q)
    seconds = time.perf_counter() - start
    return seconds / max(int((rows[1:] >= 0).sum()), 1) * 1e6


def rerank_by_cosine(queries: np.ndarray, shortlist: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """The ADC shortlist re-ordered by cosine between query and decoded item (codes only).

    This is semstore's default search path (ADC top-100, then exact cosine with the decoded,
    L2-normalised candidates); it undoes the score bias of items whose reconstruction is
    shorter or longer than the item, which raw inner-product ADC ranks with.
    """
    unit = decoded / np.maximum(np.linalg.norm(decoded, axis=1, keepdims=True), 1e-12)
    valid = shortlist >= 0
    cosine = np.einsum("nd,nkd->nk", queries, unit[np.where(valid, shortlist, 0)])
    cosine[~valid] = -np.inf
    order = np.argsort(-cosine, axis=1, kind="stable")[:, :K]
    return np.take_along_axis(shortlist, order, axis=1)


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def format_table(rows: list[Row]) -> str:
    """A Markdown table of the rows."""
    head = ("| method | bits | 10-R@10 | paired R@1 | paired R@10 | re-ranked 10-R@10 | re-ranked R@1 "
            "| re-ranked R@10 | zero-shot acc | % of float "
            "| bytes/vec | entropy bits | ANS-coded bits | train s | encode vec/s | re-rank µs/cand. |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.bits} | {r.recall10:.3f} | {r.paired_r1:.3f} | {r.paired_r10:.3f} "
            f"| {r.rerank_recall10:.3f} | {r.rerank_r1:.3f} | {r.rerank_r10:.3f} "
            f"| {r.zero_shot:.3f} | {100 * r.zero_shot_frac:.1f} | {r.bytes_per_vector:g} "
            f"| {_fmt(r.entropy_bits, '.1f')} | {_fmt(r.coded_bits, '.1f')} | {r.train_s:.1f} "
            f"| {r.encode_vps:,.0f} | {r.rerank_us:.2f} |"
        )
    return "\n".join(lines)


def machine_facts() -> str:
    """CPU model, cores and library versions, one line."""
    cpu = cpu_model()
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = "absent"
    load = ", load avg {:.1f}".format(os.getloadavg()[0]) if hasattr(os, "getloadavg") else ""
    return (f"{cpu}, {os.cpu_count()} cores (faiss threads 2){load}, Python {platform.python_version()}, "
            f"faiss {faiss.__version__}, torch {torch_version}, numpy {np.__version__}")


def plot(rows: list[Row], float_row: Row, path: Path, title: str) -> None:
    """recall / paired R@10 / zero-shot vs bits, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("recall10", "10-recall@10 (vs exact float)"),
              ("paired_r10", "paired R@10"),
              ("zero_shot_frac", "zero-shot acc / float acc")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    methods = sorted({r.method for r in rows}, key=[r.method for r in rows].index)
    for ax, (field, label) in zip(axes, panels):
        for name in methods:
            pts = sorted((r.bits, getattr(r, field)) for r in rows if r.method == name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.axhline(getattr(float_row, field), color="black", linestyle="--", linewidth=1, label="float")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r.bits for r in rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("bits per vector")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bits", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--train", type=int, default=None, help="training vectors (default 20000, quick 10000)")
    p.add_argument("--test", type=int, default=None, help="test items (default 5000, quick 2000)")
    p.add_argument("--dataset", nargs="+", choices=["minilm", "wordnet", "synthetic", "npz"], default=["minilm"],
                   help="one or more data sets, run one after the other (one table each)")
    p.add_argument("--embeddings", type=Path, default=None,
                   help="with --dataset npz: the .npz of bench/embed_clip.py (real CLIP images + captions)")
    p.add_argument("--quick", action="store_true",
                   help="10k/2k split, cheaper OPQ and RQ training, no OPQ+PQ4fs (stated in the report)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="only these methods (PQ OPQ+PQ RQ PQ4fs OPQ+PQ4fs sign-binary PQVAECodec PQVAECodec+neural)")
    p.add_argument("--no-codec", action="store_true", help="skip PQVAECodec (baselines only)")
    p.add_argument("--neural", action=argparse.BooleanOptionalAction, default=True,
                   help="also evaluate PQVAECodec+neural: the same codes re-ranked by the neural decoder")
    p.add_argument("--neural-option", action="append", default=[], metavar="NAME=VALUE",
                   help="NeuralDecoderConfig field for PQVAECodec+neural (repeatable)")
    p.add_argument("--codec-k", type=int, default=256, help="PQVAECodec codebook size K")
    p.add_argument("--codec-option", action="append", default=[], metavar="NAME=VALUE",
                   help="PQVAECodec hyper-parameter, e.g. parallel_weight=4 (repeatable)")
    p.add_argument("--rq-beam", type=int, default=None, help="RQ encode beam (default 16, quick 8)")
    p.add_argument("--rq-train-beam", type=int, default=None, help="RQ training beam (default 5 = faiss's, quick 4)")
    p.add_argument("--rq-refine", action=argparse.BooleanOptionalAction, default=None,
                   help="RQ least-squares codebook refinement (default on, quick off)")
    p.add_argument("--opq-niter", type=int, default=None, help="OPQ iterations (default 50, quick 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md")
    p.add_argument("--plot", type=Path, default=BENCH_DIR / "recall_vs_bits.png")
    return p.parse_args(argv)


def codec_options(pairs: list[str]) -> dict[str, object]:
    """``NAME=VALUE`` strings as codec keyword arguments (values parsed as JSON when they can be)."""
    import json

    options: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--codec-option expects NAME=VALUE, got {pair!r}")
        try:
            options[name] = json.loads(value)
        except json.JSONDecodeError:
            options[name] = value
    return options


def load_data(args: argparse.Namespace, dataset: str) -> EmbeddingDataset:
    if dataset == "synthetic":
        return make_synthetic_clip_like(args.train, args.test, seed=args.seed)
    if dataset == "npz":
        if args.embeddings is None:
            raise SystemExit("codec_quality: --dataset npz needs --embeddings PATH (made by bench/embed_clip.py)")
        try:
            return load_npz_embeddings(args.embeddings, args.train, args.test, seed=args.seed)
        except DatasetError as exc:  # a wrong file or split is a user error: the message, no traceback
            raise SystemExit(f"codec_quality: {exc}") from exc
    if dataset == "wordnet":
        try:
            return load_minilm_wordnet(args.train, args.test, seed=args.seed)
        except DatasetError as exc:  # WordNet not installed or split too large: the message, no traceback
            raise SystemExit(f"codec_quality: {exc}") from exc
    return load_minilm_docstrings(args.train, args.test, seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.train = args.train or (10_000 if args.quick else 20_000)
    args.test = args.test or (2_000 if args.quick else 5_000)
    rq = {
        "beam": args.rq_beam or (8 if args.quick else 16),
        "train_beam": args.rq_train_beam or (4 if args.quick else 5),
        "refine": (not args.quick) if args.rq_refine is None else args.rq_refine,
        # quick: k-means per RQ step on <= 64 points per centroid, 10 iterations (~5x cheaper)
        **({"kmeans_niter": 10, "kmeans_max_points_per_centroid": 64} if args.quick else {}),
    }
    opq_niter = args.opq_niter or (8 if args.quick else 50)
    faiss.omp_set_num_threads(2)
    try:
        import torch
        torch.set_num_threads(2)
    except ImportError:
        pass
    for dataset in args.dataset:
        run_dataset(args, dataset, rq, opq_niter, argv)
    return 0


def run_dataset(args: argparse.Namespace, dataset: str, rq: dict[str, object], opq_niter: int,
                argv: list[str] | None) -> None:
    """Every method at every bit budget on one data set; appends its table to ``args.out``."""
    start = time.perf_counter()
    data = load_data(args, dataset)
    print(f"[data] {data.description}\n       train {data.train.shape}, test {data.test.shape}, "
          f"{len(data.class_names)} classes, loaded in {time.perf_counter() - start:.1f}s; {data.facts}",
          flush=True)
    truth = exact_topk_inner_product(data.test_queries, data.test, K)
    float_row = evaluate(FloatBaseline(data.dim), data, truth, None)
    rows: list[Row] = []
    notes: list[str] = []
    wanted = set(args.methods) if args.methods else None
    if wanted and NeuralRerankBaseline.name in wanted:
        wanted.add(PQVAEBaseline.name)  # the neural row re-ranks the linear codec's codes

    for bits in args.bits:
        methods = build_methods(bits, data.dim, rq=rq, opq_niter=opq_niter,
                                opq_fastscan=not args.quick, seed=args.seed)
        if not args.no_codec:
            try:
                methods.append(PQVAEBaseline(bits, data.dim, codebook_size=args.codec_k, seed=args.seed,
                                             **codec_options(args.codec_option)))
            except ImportError as exc:
                notes.append(f"PQVAECodec missing (not importable: {exc}); baselines only.")
            except Exception as exc:  # noqa: BLE001 - the codec is developed in parallel
                notes.append(f"PQVAECodec at {bits} bits could not be built: {exc!r}")
            if args.neural and methods and isinstance(methods[-1], PQVAEBaseline):
                methods.append(NeuralRerankBaseline(methods[-1], seed=args.seed, **codec_options(args.neural_option)))
        for method in methods:
            if wanted and method.name not in wanted:
                continue
            t0 = time.perf_counter()
            try:
                row = evaluate(method, data, truth, float_row.zero_shot)
            except Exception as exc:  # noqa: BLE001 - one broken method must not hide the rest
                notes.append(f"{method.name} at {bits} bits failed: {exc!r}")
                print(f"[{bits:>3} bits] {method.name:<12} FAILED: {exc!r}", flush=True)
                continue
            rows.append(row)
            print(f"[{bits:>3} bits] {row.method:<12} 10-R@10 {row.recall10:.3f}  "
                  f"pR@1 {row.paired_r1:.3f}  pR@10 {row.paired_r10:.3f}  "
                  f"re-ranked {row.rerank_recall10:.3f}/{row.rerank_r1:.3f}/{row.rerank_r10:.3f}  "
                  f"zs {row.zero_shot:.3f}  ({time.perf_counter() - t0:.1f}s)", flush=True)

    table = format_table([float_row, *rows])
    details = sorted({(r.method, r.bits, r.details) for r in rows if r.details})
    command = "python " + " ".join(shlex.quote(a) for a in [
        os.path.relpath(__file__, Path.cwd()), *(sys.argv[1:] if argv is None else argv)])
    report = "\n".join([
        f"## {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} — {data.name}"
        f"{' (quick)' if args.quick else ''}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_facts()}  ",
        f"Data: {data.description}; train {len(data.train)}, test {len(data.test)} "
        f"(queries paired with the test documents), dim {data.dim}; {data.facts}  ",
        "ADC: float query vs coded test documents, inner product; 10-R@10 against exact float "
        "search with the same queries. Re-ranked: the ADC top-100 re-ordered by cosine with the "
        "decoded, normalised items (codes only; semstore's default search path). Zero-shot on "
        "decoded vectors.",
        "",
        table,
        "",
        "Settings: " + "; ".join(f"{m} @{b}: {d}" for m, b, d in details),
        *([""] + [f"Note: {n}" for n in sorted(set(notes))] if notes else []),
        "",
    ])
    print("\n" + table)
    for note in sorted(set(notes)):
        print("Note:", note)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as fh:
        if fh.tell() == 0:
            fh.write("# Codec-quality benchmark results\n\nAppended by `bench/codec_quality.py`.\n\n")
        fh.write(report + "\n")
    plot_path = args.plot if len(args.dataset) == 1 else args.plot.with_stem(f"{args.plot.stem}-{data.name}")
    if rows:
        plot(rows, float_row, plot_path, f"{data.name}: train {len(data.train)}, test {len(data.test)}")
    print(f"\nappended to {args.out}; plot: {plot_path}")


if __name__ == "__main__":
    sys.exit(main())
