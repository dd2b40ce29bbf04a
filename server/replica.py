"""Replicas: keep every collection's in-memory index in step with writes made by other processes.

Any number of ``semstore serve`` processes can share one PostgreSQL database. Each runs an
:class:`IndexPoller`: every ``settings.index_poll_seconds`` it reads each collection's
change counter and, when it moved, applies only the difference to the index
(:func:`semstore.replica.catch_up`), so items ingested or deleted through another replica
are searchable here within about one poll interval, without a restart. (A request that
touches a collection also checks the counter first, so it never sees an older index.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from semstore.database import Database

logger = logging.getLogger("semstore.server")


class IndexPoller:
    """A daemon thread that brings every collection's index up to date every ``interval`` seconds."""

    def __init__(self, database: Callable[[], Database], interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"the poll interval must be positive, got {interval}")
        self._database = database
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> None:
        """Catch up every collection that has an index (errors are logged, the next poll retries)."""
        try:
            for collection in self._database().collections():
                _ = collection.index  # checks the change counter; catches up or builds if needed
        except Exception as exc:  # a database outage must not kill the thread
            logger.warning("index poll failed: %s", " ".join(str(getattr(exc, "orig", None) or exc).split()))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="semstore-index-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll_once()
