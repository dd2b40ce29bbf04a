"""Quick development sweep of PQVAECodec settings against FAISS PQ / OPQ / RQ at 128 bits.

Same data as bench/codec_quality.py (real all-MiniLM-L6-v2 embeddings of Python docstrings,
20,000 train / 5,000 test, seed 0) but only 128 bits and a few variants, so one run fits in
minutes. Metrics (all on the test split):

* r10@10: 10-recall@10 of the compressed ranking (inner product of the paired text queries with
  the linear reconstructions) against exact float search, first 1,000 queries;
* paired R@1 / R@10: rank of each query's own document among the 5,000 compressed documents;
* zero-shot: accuracy of argmax cosine(decoded item, class prompt) as a fraction of float;
* test relative MSE: ||x - x_hat||^2 / ||x - mean||^2.

Usage::

    python bench/codec_sweep.py                      # baselines + default codec
    python bench/codec_sweep.py --variant "beam_size=1" --variant "init='residual-quantizer'"
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import datasets as D  # noqa: E402
from semstore.codec import PQVAECodec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", default=[], help="codec keyword overrides, e.g. \"beam_size=1\"")
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args()
    faiss.omp_set_num_threads(2)

    ds = D.load_minilm_docstrings(20000, 5000)
    train, test, queries, labels, prompts = ds.train, ds.test, ds.test_queries, ds.test_labels, ds.class_prompts
    spread = float(np.mean(np.sum((test - train.mean(0)) ** 2, axis=1)))
    truth = np.argsort(-(queries[:1000] @ test.T), axis=1)[:, :10]

    def zero_shot(x: np.ndarray) -> float:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return float(np.mean(np.argmax(x @ prompts.T, axis=1) == labels))

    float_zero_shot = zero_shot(test)

    def report(name: str, linear: np.ndarray, seconds: float) -> None:
        found = np.argsort(-(queries[:1000] @ linear.T), axis=1)[:, :10]
        r10 = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
        scores = queries @ linear.T
        rank = (scores > scores[np.arange(len(queries)), np.arange(len(queries))][:, None]).sum(1)
        mse = float(np.mean(np.sum((test - linear) ** 2, axis=1))) / spread
        print(
            f"| {name} | {r10:.3f} | {np.mean(rank < 1):.3f} | {np.mean(rank < 10):.3f} "
            f"| {zero_shot(linear) / float_zero_shot:.3f} | {mse:.3f} | {seconds:.0f} |",
            flush=True,
        )

    print("| method (128 bits) | r10@10 | paired R@1 | paired R@10 | zero-shot / float | test rel. MSE | train+encode s |")
    print("|---|---|---|---|---|---|---|")
    if not args.no_baselines:
        start = time.perf_counter()
        pq = faiss.ProductQuantizer(384, 16, 8)
        pq.train(train)
        report("FAISS PQ16x8", pq.decode(pq.compute_codes(test)), time.perf_counter() - start)
        start = time.perf_counter()
        opq = faiss.OPQMatrix(384, 16)
        opq.train(train)
        pq = faiss.ProductQuantizer(384, 16, 8)
        pq.train(opq.apply(train))
        report("FAISS OPQ16+PQ16x8", opq.reverse_transform(pq.decode(pq.compute_codes(opq.apply(test)))), time.perf_counter() - start)
        start = time.perf_counter()
        rq = faiss.ResidualQuantizer(384, 16, 8)
        rq.max_beam_size = 16
        rq.train(train)
        report("FAISS RQ16x8 beam 16", rq.decode(rq.compute_codes(test)), time.perf_counter() - start)
    for variant in [""] + args.variant:
        overrides = {k.arg: ast.literal_eval(k.value) for k in ast.parse(f"f({variant})").body[0].value.keywords} if variant else {}
        start = time.perf_counter()
        codec = PQVAECodec(dim=384, num_subvectors=16, codebook_size=256, **overrides).fit(train, progress=False)
        report(f"PQVAECodec 16x8 {variant or 'defaults'}", codec.decode(codec.encode(test), normalize=False), time.perf_counter() - start)


if __name__ == "__main__":
    main()
