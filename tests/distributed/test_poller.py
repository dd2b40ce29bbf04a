"""The server's index poller: periodic, survives a database outage, stops cleanly."""

from __future__ import annotations

import logging
import threading

import pytest

from server.replica import IndexPoller


class _Collection:
    def __init__(self, touched: threading.Event) -> None:
        self._touched = touched

    @property
    def index(self) -> None:
        self._touched.set()


class _Database:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.touched = threading.Event()

    def collections(self) -> list[_Collection]:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database is down")
        return [_Collection(self.touched)]


def test_poller_keeps_polling_after_a_database_error(caplog: pytest.LogCaptureFixture) -> None:
    database = _Database(failures=2)
    poller = IndexPoller(lambda: database, interval=0.02)
    with caplog.at_level(logging.WARNING, logger="semstore.server"):
        poller.start()
        try:
            assert database.touched.wait(10), "the poller never reached the collections"
        finally:
            poller.stop()
    assert database.failures == 0
    assert sum("index poll failed: database is down" in r.getMessage() for r in caplog.records) == 2


def test_poll_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        IndexPoller(lambda: _Database(0), interval=0)  # type: ignore[arg-type,return-value]
