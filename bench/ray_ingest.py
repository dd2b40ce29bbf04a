"""Distributed ingest throughput: Ray Data with 1 and 2 encoder actors on this machine.

Generates N distinct images (224 x 224 PNG), trains a codec once on 64 of them (not
timed), then times, each into a fresh collection that reuses that codec:

* ``single process``: :meth:`Collection.add` (the in-process pipeline, torch's default threads),
* ``ray, W workers``: :meth:`Collection.add` with ``ray=RayIngestOptions(workers=W)`` on a
  local Ray instance started once beforehand (``ray.init(num_cpus=2)`` and a first tiny
  Ray Data job, not timed), each actor with 1 CPU and 1 torch thread.

Times are wall clock for the whole call (listing, reading, decoding, encoding, writing,
including the actors' start and model load). The fixed cost of a Ray run (planning, actor
start, model load) is measured by a run over as many images as workers, and subtracted in
the "after fixed cost" column. Scaling efficiency = throughput(2 workers) / (2 x
throughput(1 worker)), on the whole-call figures. The default model is ViT-B-32 with random weights: no
weights can be downloaded here, and random weights cost exactly the same compute.

Usage::

    python bench/ray_ingest.py [--images 160] [--model ViT-B-32] [--db sqlite:///... | postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import semstore  # noqa: E402
from bench.report import load_average, publish_section  # noqa: E402
from semstore.config import Settings  # noqa: E402
from semstore.distributed import RayIngestOptions, require_ray  # noqa: E402



def make_images(folder: Path, count: int, size: int = 224) -> list[Path]:
    """``count`` distinct PNGs: a random gradient with a random ellipse."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rng = np.random.default_rng(i)
        ramp = np.linspace(0, 1, size)[:, None, None]
        start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        image = Image.fromarray((start * (1 - ramp) + end * ramp).astype(np.uint8).repeat(size, axis=1), "RGB")
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        ImageDraw.Draw(image).ellipse((x0, y0, x0 + size // 3, y0 + size // 3), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        out = io.BytesIO()
        image.save(out, format="PNG")
        path = folder / f"img{i:05d}.png"
        path.write_bytes(out.getvalue())
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--db", default=None, help="database URL (default: a SQLite file in a temporary folder)")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    ray = require_ray()

    with tempfile.TemporaryDirectory(prefix="semstore-ray-bench-") as tmp:
        root = Path(tmp)
        url = args.db or f"sqlite:///{root / 'bench.db'}"
        settings = Settings(data_dir=root / "data", database_url=url, model=args.model, pretrained=None,
                            batch_size=args.batch_size, codec_bootstrap_size=64)
        paths = make_images(root / "images", args.images)
        db = semstore.connect(settings=settings)
        suffix = datetime.now(UTC).strftime("%H%M%S")
        bootstrap = db.create_collection(f"codec-{suffix}")
        bootstrap.add(paths[:64], progress=False)
        codec = bootstrap.codec
        assert codec is not None

        rows: list[tuple[str, int, float, str]] = []
        baseline = db.create_collection(f"single-{suffix}", codec=codec)
        started = time.perf_counter()
        report = baseline.add(paths, progress=False)
        rows.append(("single process", report.added, time.perf_counter() - started, load_average()))
        print(f"single process: {report.summary()}", flush=True)

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}})
        ray.data.range(4).map_batches(lambda batch: batch).materialize()  # Ray Data's one-time start-up, not timed
        overhead: dict[int, float] = {}
        for workers in args.workers:
            # A run over as few images as there are workers: the fixed cost (plan, actor start, model load).
            small = db.create_collection(f"ray{workers}-small-{suffix}", codec=codec)
            started = time.perf_counter()
            small.add(paths[:workers], ray=RayIngestOptions(workers=workers, batch_size=args.batch_size, read_batch_size=1), progress=False)
            overhead[workers] = time.perf_counter() - started
            target = db.create_collection(f"ray{workers}-{suffix}", codec=codec)
            started = time.perf_counter()
            report = target.add(paths, ray=RayIngestOptions(workers=workers, batch_size=args.batch_size), progress=False)
            rows.append((f"ray, {workers} worker{'s' if workers > 1 else ''}", report.added, time.perf_counter() - started, load_average()))
            print(f"ray {workers}: {report.summary()} (fixed cost {overhead[workers]:.1f}s)", flush=True)
        ray.shutdown()
        db.close()

    throughput = {label: added / seconds for label, added, seconds, _ in rows}
    one, two = throughput.get("ray, 1 worker"), throughput.get("ray, 2 workers")
    efficiency = two / (2 * one) if one and two else None
    table = [
        "| run | images | seconds | images/s | fixed cost s | images/s after fixed cost | load avg after (1/5/15 min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, added, seconds, load in rows:
        workers = int(label.split()[1]) if label.startswith("ray") else None
        fixed = overhead.get(workers) if workers else None
        steady = f"{added / (seconds - fixed):.2f}" if fixed is not None and seconds > fixed else "–"
        table.append(f"| {label} | {added} | {seconds:.1f} | {added / seconds:.2f} | "
                     f"{f'{fixed:.1f}' if fixed is not None else '–'} | {steady} | {load} |")
    lines = [
        f"## {datetime.now(UTC):%Y-%m-%d %H:%M} — distributed ingest on Ray (`bench/ray_ingest.py`)",
        "",
        f"Command: `{' '.join(['python bench/ray_ingest.py', *sys.argv[1:]])}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load avg at start of report "
        f"{load_average()}, Python {platform.python_version()}, ray {ray.__version__}  ",
        f"Model: {args.model} (random weights, same compute as trained ones), batch {args.batch_size}, "
        f"{args.images} PNG images 224 x 224, database {url.split(':')[0]}; local Ray, `ray.init(num_cpus=2)`, "
        "1 CPU and 1 torch thread per actor; wall time of the whole `Collection.add` call incl. actor start; fixed cost = a run over as many images as workers.",
        "",
        *table,
        "",
        f"Scaling efficiency 1 -> 2 workers: {efficiency:.2f} (throughput(2) / (2 x throughput(1)))." if efficiency else "",
        "",
    ]
    publish_section(lines, append=not args.no_results)


if __name__ == "__main__":
    main()
