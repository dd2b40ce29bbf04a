"""Ingest on a Ray cluster: Ray Data reads and decodes in tasks, encodes in an actor pool, writes in tasks.

The driver lists the sources, trains the codec once if the collection has none (on
embeddings of a random sample, gathered to the driver), then streams every file through

``read_batch`` (tasks) -> :class:`EncodeActor` (actor pool, one model per actor, GPU actors
when the cluster has GPUs) -> ``write_batch`` (tasks, one transaction per batch).

Ray Data retries tasks lost to a worker failure and restarts dead actors (retrying their
batches); storing is idempotent by content hash, so a retried write, or a re-run of a
killed job, adds nothing twice and finishes the rest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from semstore.distributed.stages import (
    FAILED,
    NEW,
    SKIPPED,
    EncodeActor,
    EncoderSpec,
    FailOnce,
    read_batch,
    write_batch,
)
from semstore.encoders.openclip import model_image_edge
from semstore.ingest.pipeline import FailedSource, IngestError, IngestReport, bootstrap_codec
from semstore.ingest.sources import iter_image_files

if TYPE_CHECKING:
    from semstore.codec import PQVAECodec
    from semstore.collection import Collection

INSTALL_HINT = 'Ray is not installed: pip install "semstore[distributed]" (or pip install "ray[data,serve]>=2.40")'


class RayNotInstalledError(ImportError):
    """``ray[data]`` is needed for distributed ingest but is not installed."""


class RayClusterError(RuntimeError):
    """The Ray cluster at the given address could not be joined or started."""


def require_ray() -> ModuleType:
    """The ``ray`` module (with Ray Data), or :class:`RayNotInstalledError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data needs the [data] extra: pyarrow, pandas)
    except ImportError as exc:
        raise RayNotInstalledError(INSTALL_HINT) from exc
    return ray


@dataclass(frozen=True)
class RayIngestOptions:
    """How to run an ingest on Ray.

    ``address`` goes to ``ray.init``: ``None`` joins ``RAY_ADDRESS`` if set, else starts a
    local cluster; ``"local"`` always starts one; ``"auto"`` joins the running cluster
    (``ray start``); ``"host:6379"`` or ``"ray://host:10001"`` name one. Ignored when Ray
    is already initialised in this process.
    ``gpus_per_worker``: ``None`` gives each actor one GPU when the cluster has any.
    """

    address: str | None = None
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    batch_size: int = 32
    read_batch_size: int = 32
    write_batch_size: int = 256
    seed: int = 0
    fail_once: FailOnce | None = None

    def __post_init__(self) -> None:
        for name in ("workers", "batch_size", "read_batch_size", "write_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be positive, got {self.cpus_per_worker}")


def ray_ingest(
    collection: Collection,
    sources: Iterable[str | Path] | str | Path,
    *,
    options: RayIngestOptions | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> IngestReport:
    """Ingest image files and folders into ``collection`` on Ray; same report as :meth:`Collection.add`."""
    ray = require_ray()
    options = options or RayIngestOptions()
    started = time.perf_counter()
    files = [str(path) for path in iter_image_files(sources)]
    report = IngestReport()
    if not files:
        report.seconds = time.perf_counter() - started
        return report
    if not ray.is_initialized():
        try:
            ray.init(address=options.address, include_dashboard=False, log_to_driver=progress)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = options.address or "RAY_ADDRESS / a new local cluster"
            raise RayClusterError(f"cannot join or start a Ray cluster at {where}: {exc}") from exc
    ray.data.DataContext.get_current().enable_progress_bars = progress
    job = _Job(ray, collection, options, dict(metadata) if metadata else None)

    codec = collection.codec
    if codec is None:
        codec_id, codec = job.bootstrap_codec(files, progress=progress)
        report.codec_trained = codec_id is not None
        report.codec_report = codec.report.summary() if report.codec_trained and codec.report else None
    report.codec_hash = codec.content_hash
    job.ingest(files, codec.to_bytes(), _codec_id(collection), report)
    report.seconds = time.perf_counter() - started
    return report


def _codec_id(collection: Collection) -> int:
    from semstore import storage

    with collection.database.sessions() as session:
        codec_id = storage.get_collection_by_id(session, collection_id=collection.id).codec_id
    if codec_id is None:
        raise IngestError(f"collection {collection.name!r} has no codec")
    return int(codec_id)


class _Job:
    """One ingest's Ray Data plan (the dataset stages and their arguments)."""

    def __init__(self, ray: ModuleType, collection: Collection, options: RayIngestOptions, metadata: dict[str, Any] | None) -> None:
        self._ray = ray
        self._collection = collection
        self._options = options
        self._metadata = metadata
        self._settings = collection.database.settings
        self._url = collection.database.url
        gpus = options.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        self._gpus = gpus
        self._encoder = EncoderSpec(
            model=collection.model,
            pretrained=collection.pretrained,
            device="cuda" if gpus > 0 else self._settings.device,
            threads=max(1, int(options.cpus_per_worker)),
            batch_size=options.batch_size,
            factory=collection.database.injected_encoder_factory,
        )

    def _encoded(self, files: list[str], codec: bytes | None) -> Any:
        options = self._options
        blocks = max(1, min(len(files), math.ceil(len(files) / options.read_batch_size)))
        dataset = self._ray.data.from_items([{"source": f} for f in files], override_num_blocks=blocks)
        dataset = dataset.map_batches(
            read_batch,
            batch_size=options.read_batch_size,
            batch_format="numpy",
            fn_kwargs={
                "database_url": self._url,
                "collection_id": self._collection.id,
                "max_pixels": self._settings.max_image_pixels,
                "min_edge": model_image_edge(self._collection.model),
            },
        )
        return dataset.map_batches(
            EncodeActor,
            batch_size=options.batch_size,
            batch_format="numpy",
            compute=self._ray.data.ActorPoolStrategy(size=options.workers),
            num_cpus=options.cpus_per_worker,
            num_gpus=self._gpus,
            fn_constructor_kwargs={"encoder": self._encoder, "codec": codec, "fail_once": options.fail_once},
        )

    def bootstrap_codec(self, files: list[str], *, progress: bool) -> tuple[int | None, PQVAECodec]:
        """Train the codec on a random sample's embeddings, gathered here; returns (codec id if ours, codec)."""
        size = min(len(files), self._settings.codec_bootstrap_size)
        rng = np.random.default_rng(self._options.seed)
        sample = [files[i] for i in sorted(rng.choice(len(files), size=size, replace=False))]
        parts = [
            batch["embedding"][batch["status"] == NEW]
            for batch in self._encoded(sample, None).iter_batches(batch_size=None, batch_format="numpy")
        ]
        embeddings = np.concatenate(parts) if parts else np.zeros((0, self._collection.dim), dtype=np.float32)
        database = self._collection.database
        codec, codec_id, trained = bootstrap_codec(
            database.sessions, self._collection.id, database.new_codec, embeddings, progress=progress
        )
        return (codec_id if trained else None), codec

    def ingest(self, files: list[str], codec: bytes, codec_id: int, report: IngestReport) -> None:
        """Run every file through read -> encode -> write and tally the outcome into ``report``."""
        written = self._encoded(files, codec).map_batches(
            write_batch,
            batch_size=self._options.write_batch_size,
            batch_format="numpy",
            fn_kwargs={
                "database_url": self._url,
                "collection_id": self._collection.id,
                "codec_id": codec_id,
                "metadata": self._metadata,
            },
        )
        for batch in written.iter_batches(batch_size=None, batch_format="numpy"):
            for source, status, reason, item_id in zip(batch["source"], batch["status"], batch["reason"], batch["item_id"]):
                if status == "added":
                    report.added += 1
                    report.added_items.append((str(source), int(item_id)))
                elif status == SKIPPED:
                    report.skipped += 1
                elif status == FAILED:
                    report.failed.append(FailedSource(str(source), str(reason)))
