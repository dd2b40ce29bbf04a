"""Ingest speed end to end on CPU, and the share of time spent in the codec and in the database.

Writes N synthetic JPEG photos (640x480, smooth random colour fields) to a temporary folder,
then runs ``Collection.add(folder)`` into a fresh SQLite database with the default model
architecture **ViT-B-32 with random weights** (``pretrained=None``: no weights download; the
compute per image is the same as with the real weights) and a reused 16-byte codec
(M=16, K=256, the default encoding beam; quick-trained, so no codec training is timed).

Time is attributed by wrapping, in this process only, the pipeline's stages with timers:

* ``clip``: ``Encoder.encode_images`` (preprocessing + the ViT forward pass),
* ``codec``: ``PQVAECodec.encode`` (embeddings -> codes),
* ``database``: ``IngestPipeline._store`` (building rows, the batched INSERT transaction and
  commit, and the in-memory index update),
* ``read``: ``IngestPipeline._read_batch`` (file read, sha256, the duplicate look-up query and
  JPEG decode; in the background decode thread, overlapped with ``clip``) and its
  ``storage.existing_hashes`` query on its own.

Usage::

    python bench/ingest_speed.py --images 256
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import semstore  # noqa: E402
from bench.report import CACHE, publish  # noqa: E402
from bench.search_data import train_vectors  # noqa: E402
from semstore import storage  # noqa: E402
from semstore.codec import CodecConfig, PQVAECodec  # noqa: E402
from semstore.config import Settings  # noqa: E402
from semstore.encoders import OpenClipEncoder  # noqa: E402
from semstore.ingest.pipeline import IngestPipeline  # noqa: E402

MODEL = "ViT-B-32"


def write_photos(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` distinct 640x480 JPEGs: upsampled random colour fields (JPEG-realistic sizes)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((640, 480), Image.BICUBIC).save(folder / f"photo-{i:05d}.jpg", quality=90)


def default_codec() -> PQVAECodec:
    """Default shape and encoding (M=16, K=256, default beam), trained quickly on 2,000 vectors; cached."""
    path = CACHE / "search" / f"codec-ingest-m16k256-beam{CodecConfig(dim=512).beam_size}.safetensors"
    if path.exists():
        return PQVAECodec.load(path)
    codec = PQVAECodec(dim=512, iterations=0, kmeans_iterations=4, init="kmeans").fit(train_vectors(2_000), progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec.save(path)
    return codec


class Timers:
    """Seconds per stage, summed over calls and threads."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds[name] += time.perf_counter() - t0
                    self.calls[name] += 1

        return timed


@contextmanager
def patched(timers: Timers, targets: list[tuple[object, str, str]]) -> Iterator[None]:
    originals = [(owner, attribute, getattr(owner, attribute)) for owner, attribute, _ in targets]
    for (owner, attribute, name), (_, _, original) in zip(targets, originals):
        setattr(owner, attribute, timers.wrap(name, original))
    try:
        yield
    finally:
        for owner, attribute, original in originals:
            setattr(owner, attribute, original)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32, help="images per encoder batch (Settings.batch_size)")
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)

    codec = default_codec()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photos = root / "photos"
        photos.mkdir()
        write_photos(photos, args.images)
        settings = Settings(data_dir=root / "data", model=MODEL, pretrained=None, batch_size=args.batch_size)
        t0 = time.perf_counter()
        encoder = OpenClipEncoder(MODEL, pretrained=None)
        model_s = time.perf_counter() - t0
        db = semstore.connect(f"sqlite:///{root / 'bench.db'}", settings=settings, encoder_factory=lambda m, p: encoder)
        collection = db.create_collection("bench", model=MODEL, codec=codec)
        encoder.encode_images([Image.new("RGB", (224, 224))])  # warm-up: first-call allocations
        timers = Timers()
        targets = [
            (type(encoder), "encode_images", "clip"),
            (PQVAECodec, "encode", "codec"),
            (IngestPipeline, "_store", "database"),
            (IngestPipeline, "_read_batch", "read"),
            (storage, "existing_hashes", "existing_hashes"),
        ]
        with patched(timers, targets):
            t0 = time.perf_counter()
            result = collection.add(photos, progress=False)
            total = time.perf_counter() - t0
        if result.added != args.images:
            raise RuntimeError(f"added {result.added} of {args.images} images: {result.summary()}")

    rate = args.images / total
    shares = {name: timers.seconds[name] / total for name in ("clip", "codec", "database", "read", "existing_hashes")}
    lines = [
        "| images | batch | total s | images/s | CLIP s (share) | codec s (share) | database s (share) | read+decode s (bg thread) | duplicate look-up s | model load s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.images} | {args.batch_size} | {total:.1f} | {rate:.1f} | {timers.seconds['clip']:.1f} ({100 * shares['clip']:.1f} %) "
        f"| {timers.seconds['codec']:.2f} ({100 * shares['codec']:.2f} %) | {timers.seconds['database']:.2f} ({100 * shares['database']:.2f} %) "
        f"| {timers.seconds['read']:.2f} ({100 * shares['read']:.1f} %) | {timers.seconds['existing_hashes']:.2f} | {model_s:.1f} |",
    ]
    verdict = (
        f"Goals (share under 5 %): codec {100 * shares['codec']:.2f} % ({'met' if shares['codec'] < 0.05 else 'MISSED'}), "
        f"database {100 * shares['database']:.2f} % ({'met' if shares['database'] < 0.05 else 'MISSED'})."
    )
    body = "\n".join(
        [
            f"{MODEL} with RANDOM weights (pretrained=None; same compute as real weights), torch CPU, "
            f"SQLite, {args.images} synthetic 640x480 JPEGs, reused codec M=16 K=256 beam {CodecConfig(dim=512).beam_size}. Shares are of the "
            "end-to-end wall time of `Collection.add(folder)` (model load excluded); read+decode runs in the "
            "background thread, overlapped with CLIP.",
            "",
            *lines,
            "",
            verdict,
        ]
    )
    publish("Ingest speed", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
