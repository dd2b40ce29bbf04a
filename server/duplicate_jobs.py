"""Near-duplicate joins of the HTTP API: one at a time per collection, the last answer reused.

A join compares every item with its nearest ones: minutes at 10^6 items (bench/RESULTS.md).
Any reader may ask for it, so a server must not run the same join many times at once, nor
again for an unchanged collection: a second request while one runs gets 409 (retry later),
and the answer is kept, per collection, for as long as the collection's revision (and the
threshold and neighbours asked for) stay the same.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

#: Collections whose last answer is kept.
MAX_ANSWERS = 16


class DuplicatesRunning(RuntimeError):
    """A near-duplicate join of this collection is already running."""


class DuplicateJobs:
    """The running joins and the last answers, by collection name (thread-safe)."""

    def __init__(self, max_answers: int = MAX_ANSWERS) -> None:
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._answers: OrderedDict[str, tuple[tuple[Any, ...], Any]] = OrderedDict()
        self._max_answers = max_answers

    def run(self, name: str, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """``compute()``'s answer for collection ``name``, or the one kept for the same ``key``
        (e.g. its revision and the request's parameters); raises :class:`DuplicatesRunning`
        when a join of ``name`` is under way."""
        with self._lock:
            kept = self._answers.get(name)
            if kept is not None and kept[0] == key:
                self._answers.move_to_end(name)
                return kept[1]
            if name in self._running:
                raise DuplicatesRunning(name)
            self._running.add(name)
        try:
            answer = compute()
            with self._lock:
                self._answers[name] = (key, answer)
                self._answers.move_to_end(name)
                while len(self._answers) > self._max_answers:
                    self._answers.popitem(last=False)
            return answer
        finally:
            with self._lock:
                self._running.discard(name)
