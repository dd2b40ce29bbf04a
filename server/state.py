"""What one app instance shares between requests: settings, the database, limits, metrics."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from semstore.encoders.policy import ModelPolicy
from server.batching import TextBatcher
from server.duplicate_jobs import DuplicateJobs
from server.ingest_process import IngestProcesses, build_ingest
from server.ingest_threads import IngestThreads
from server.limits import RateLimiter
from server.metrics import Metrics

if TYPE_CHECKING:
    from semstore.config import Settings
    from semstore.database import Database, EncoderFactory
    from semstore.sharding import ShardSearch

logger = logging.getLogger("semstore.server")

#: Seconds between two ``last_used_at`` updates of the same key (keeps reads free of writes).
TOUCH_INTERVAL_S = 60.0


class DatabaseHolder:
    """Connects on first use, so the app starts (and /health answers) while the database is down."""

    def __init__(self, settings: Settings, encoder_factory: EncoderFactory | None = None) -> None:
        self.settings = settings
        self._encoder_factory = encoder_factory
        self._database: Database | None = None
        self._lock = threading.Lock()

    def get(self) -> Database:
        """The connected (and migrated) database, one per app."""
        with self._lock:
            if self._database is None:
                import semstore

                database = semstore.connect(
                    self.settings.resolved_database_url(), settings=self.settings, encoder_factory=self._encoder_factory
                )
                if self.settings.shards > 1:
                    database.use_shard_search(_deploy_shards(self.settings))
                self._database = database
            return self._database

    def close(self) -> None:
        with self._lock:
            if self._database is not None:
                self._database.close()
                self._database = None


def _deploy_shards(settings: Settings) -> ShardSearch:
    """Join Ray (``settings.ray_address``) and deploy the shards this server searches through."""
    from semstore.distributed import require_ray
    from semstore.distributed.shard_serving import deploy_shards

    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=settings.ray_address, log_to_driver=False)
    return deploy_shards(
        settings, shards=settings.shards, replicas=settings.shard_replicas, timeout_s=settings.shard_timeout_seconds
    )


class IndexWarmup:
    """Loads every collection's index once (at startup) and remembers whether that worked."""

    def __init__(self, holder: DatabaseHolder) -> None:
        self._holder = holder
        self._lock = threading.Lock()
        self.state = "pending"
        self.error: str | None = None

    def run(self) -> bool:
        """Load (or build) all indexes unless already done; True when the indexes are ready.

        Also removes what a crash may have left in the upload folders (see
        :meth:`semstore.Collection.clean_uploads`).
        """
        with self._lock:
            if self.state == "ready":
                return True
            self.state = "loading"
            try:
                database = self._holder.get()
                for collection in database.collections():
                    if database.shard_search is None:  # (with shards, the shards hold the indexes)
                        _ = collection.index
                    removed = collection.clean_uploads()
                    if removed:
                        logger.info("collection %r: removed %d upload files left by an interrupted write", collection.name, removed)
            except Exception as exc:  # reported by /health; the next health check retries
                self.state, self.error = "error", " ".join(str(getattr(exc, "orig", None) or exc).split())
                return False
            self.state, self.error = "ready", None
            return True


@dataclass
class AppState:
    """Everything routes reach through dependencies (``request.app.state.semstore``)."""

    settings: Settings
    database: DatabaseHolder
    rate_limiter: RateLimiter
    auth_failures: RateLimiter
    model_policy: ModelPolicy
    metrics: Metrics
    warmup: IndexWarmup
    inference: anyio.CapacityLimiter
    text_batcher: TextBatcher
    ingest: IngestThreads | IngestProcesses
    duplicates: DuplicateJobs = field(default_factory=DuplicateJobs)
    _touched: dict[int, float] = field(default_factory=dict)
    _touch_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, settings: Settings, encoder_factory: EncoderFactory | None = None) -> AppState:
        holder = DatabaseHolder(settings, encoder_factory)
        inference = anyio.CapacityLimiter(settings.inference_concurrency)
        return cls(
            settings=settings,
            database=holder,
            rate_limiter=RateLimiter(settings.rate_limit_per_minute),
            auth_failures=RateLimiter(settings.auth_failures_per_minute),
            model_policy=ModelPolicy.from_settings(settings),
            metrics=Metrics(holder.get),
            warmup=IndexWarmup(holder),
            inference=inference,
            text_batcher=TextBatcher(inference),
            ingest=build_ingest(settings, encoder_factory, inference),
        )

    def should_touch(self, key_id: int) -> bool:
        """Whether the key's ``last_used_at`` is due for an update (at most once a minute)."""
        now = time.monotonic()
        with self._touch_lock:
            if now - self._touched.get(key_id, -TOUCH_INTERVAL_S) < TOUCH_INTERVAL_S:
                return False
            self._touched[key_id] = now
            return True
