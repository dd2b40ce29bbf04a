"""What the neural re-rank decoder costs per candidate, against the linear decoder (issue #18).

Usage::

    python bench/neural_rerank_cost.py [--dim 512] [--m 16] [--k 256] [--hidden 256] [--blocks 1]
                                       [--shortlist 100] [--queries 500] [--threads 1]

Times what a search's re-rank does for one query: decode the shortlist's codes (the linear
decoder: M table look-ups; the neural one: that, then the residual MLP of
:mod:`semstore.codec.neural` with its input layer folded into per-stage tables), normalise,
take the cosine with the query. The cost does not depend on the weights' values, so the codec
and the decoder hold random ones of the real shapes (a trained decoder of these sizes costs the
same). Prints microseconds per candidate (median over ``--queries`` shortlists) and the
multiply-adds per candidate.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=512, help="embedding width (512: CLIP ViT-B-32)")
    parser.add_argument("--m", type=int, default=16, help="codes per vector")
    parser.add_argument("--k", type=int, default=256, help="codebook size")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--shortlist", type=int, default=100, help="candidates re-ranked per query")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads")
    args = parser.parse_args(argv)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)

    import numpy as np

    from semstore.codec.neural import NeuralDecoder, NeuralDecoderConfig

    rng = np.random.default_rng(0)
    books = rng.standard_normal((args.m, args.k, args.dim)).astype(np.float32) * 0.05
    mean = rng.standard_normal(args.dim).astype(np.float32) * 0.05
    config = NeuralDecoderConfig(hidden=args.hidden, blocks=args.blocks)
    h, d = args.hidden, args.dim
    params = {
        "w_in": rng.standard_normal((d, h)) * d**-0.5, "b_in": np.zeros(h),
        "code_embedding": rng.standard_normal((args.m, args.k, h)) * 0.02,
        "ln_out_g": np.ones(h), "ln_out_b": np.zeros(h), "w_out": rng.standard_normal((h, d)) * h**-0.5, "b_out": np.zeros(d),
    }  # fmt: skip
    for block in range(args.blocks):
        params.update({
            f"ln{block}_g": np.ones(h), f"ln{block}_b": np.zeros(h),
            f"w1_{block}": rng.standard_normal((h, h)) * h**-0.5, f"b1_{block}": np.zeros(h),
            f"w2_{block}": rng.standard_normal((h, h)) * h**-0.5, f"b2_{block}": np.zeros(h),
        })  # fmt: skip
    decoder = NeuralDecoder(params, config)
    decoder.bind(books, mean)

    def linear(codes: np.ndarray) -> np.ndarray:
        out = np.broadcast_to(mean, (len(codes), d)).copy()
        for m in range(args.m):
            out += books[m][codes[:, m]]
        return out

    def rerank(codes: np.ndarray, query: np.ndarray, neural: bool) -> np.ndarray:
        decoded = linear(codes)
        if neural:
            decoded = decoder.refine(codes, decoded)
        decoded /= np.maximum(np.linalg.norm(decoded, axis=1, keepdims=True), 1e-12)
        return decoded @ query

    shortlists = rng.integers(0, args.k, size=(args.queries, args.shortlist, args.m))
    queries = rng.standard_normal((args.queries, d)).astype(np.float32)
    results = {}
    for neural in (False, True):
        rerank(shortlists[0], queries[0], neural)  # warm-up
        times = []
        for codes, query in zip(shortlists, queries):
            start = time.perf_counter()
            rerank(codes, query, neural)
            times.append(time.perf_counter() - start)
        results[neural] = float(np.median(times)) / args.shortlist * 1e6
    print(f"dim {d}, M {args.m}, K {args.k}, hidden {h}, blocks {args.blocks}, shortlist {args.shortlist}, "
          f"{args.queries} queries, {args.threads} BLAS thread(s)")
    print(f"linear re-rank: {results[False]:.2f} us per candidate ({args.shortlist * results[False] / 1000:.3f} ms per query)")
    print(f"neural re-rank: {results[True]:.2f} us per candidate ({args.shortlist * results[True] / 1000:.3f} ms per query), "
          f"{decoder.flops_per_vector:,} multiply-adds per candidate in the MLP")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
