"""A process-wide bound on the pixels being decoded at once.

Every decoded image costs memory in proportion to its pixels (3-4 bytes each, twice while it
is converted), and the HTTP server decodes uploads, query images and thumbnails on several
threads. :class:`PixelBudget` makes a decode wait until the pixels already being decoded
leave room for its own, so the peak stays near ``capacity`` pixels whatever the traffic.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class PixelBudget:
    """Pixels that may be decoded at the same time, over all threads of a process.

    One image larger than ``capacity`` still decodes, alone, rather than never.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self._capacity = capacity
        self._in_use = 0
        self._changed = threading.Condition()

    @property
    def capacity(self) -> int:
        """Most pixels decoded at once (one larger image is let through alone)."""
        return self._capacity

    @property
    def in_use(self) -> int:
        """Pixels reserved right now."""
        with self._changed:
            return self._in_use

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget for the ``with`` block, waiting until they fit."""
        pixels = max(0, pixels)
        with self._changed:
            while self._in_use and self._in_use + pixels > self._capacity:
                self._changed.wait()
            self._in_use += pixels
        try:
            yield
        finally:
            with self._changed:
                self._in_use -= pixels
                self._changed.notify_all()
