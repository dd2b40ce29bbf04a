"""The threads that run uploads and path ingests, at a lower CPU priority than searches.

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

logger = logging.getLogger("semstore.server")

#: How much nicer ingest threads are than the server's other threads (0 = the same).
INGEST_NICENESS = 10

_T = TypeVar("_T")


def _lower_priority() -> None:
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + INGEST_NICENESS)
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run at normal priority
        logger.debug("ingest threads keep their priority: %s", exc)


class IngestThreads:
    """A pool of ``workers`` low-priority threads for ingest calls."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="semstore-ingest", initializer=_lower_priority)

    async def run(self, call: Callable[[], _T]) -> _T:
        """Run ``call`` on an ingest thread and wait for it without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
