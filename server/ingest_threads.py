"""The threads that run uploads and path ingests, at a lower CPU priority than searches
(``settings.ingest_processes = 0``; by default they run in a worker process instead, see
:mod:`server.ingest_process`).

On a small server an upload (decode, CLIP, codec encode) keeps a core busy for its whole
request; a search beside it then waits for the CPU. Linux schedules threads, and a thread may
lower its own priority (``setpriority`` on its thread id, no privilege needed), so ingest work
runs on its own pool whose threads are ``INGEST_NICENESS`` steps nicer than the rest of the
server: the kernel gives a runnable search thread the core first. Elsewhere (no per-thread
priority) the pool is an ordinary one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

if TYPE_CHECKING:
    from semstore.collection import Collection
    from semstore.ingest import IngestReport

logger = logging.getLogger("semstore.server")

#: How much nicer ingest threads are than the server's other threads (0 = the same).
INGEST_NICENESS = 10

_T = TypeVar("_T")


def lower_priority(tid: int | None = None) -> None:
    """Make thread ``tid`` (default: the calling one) :data:`INGEST_NICENESS` steps nicer."""
    try:
        tid = threading.get_native_id() if tid is None else tid
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + INGEST_NICENESS)
    except (AttributeError, OSError) as exc:  # not Linux, not allowed, or the thread ended: normal priority
        logger.debug("an ingest thread keeps its priority: %s", exc)


class IngestThreads:
    """A pool of ``workers`` low-priority threads for ingest calls.

    ``limiter`` (the server's encoder limiter, shared with the text encoder) is held while an
    ingest runs: on these threads its encoder work is this process's.
    """

    def __init__(self, workers: int, limiter: anyio.CapacityLimiter | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="semstore-ingest", initializer=lower_priority)
        self._limiter = limiter

    async def run(self, call: Callable[[], _T]) -> _T:
        """Run ``call`` on an ingest thread and wait for it without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def add_images(
        self, collection: Collection, images: Sequence[tuple[str, bytes]], metadata: Mapping[str, Any] | None
    ) -> IngestReport:
        """:meth:`Collection.add_images` on an ingest thread."""
        return await self._limited(partial(collection.add_images, images, metadata=metadata))

    async def add_paths(self, collection: Collection, files: Sequence[Path], metadata: Mapping[str, Any] | None) -> IngestReport:
        """:meth:`Collection.add` of server-side files on an ingest thread."""
        return await self._limited(partial(collection.add, files, metadata=metadata, progress=False))

    async def _limited(self, call: Callable[[], _T]) -> _T:
        if self._limiter is None:
            return await self.run(call)
        async with self._limiter:
            return await self.run(call)

    def start(self) -> None:
        """Nothing to start ahead: the threads start with the first ingest."""

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
