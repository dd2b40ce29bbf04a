"""Micro-batching of text queries: concurrent requests share one encoder call.

A CLIP text tower costs nearly the same for one prompt as for a few, so under load the
texts that arrive within a couple of milliseconds of each other (for the same encoder)
are embedded together in a worker thread, and each request gets its own row back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import anyio
import numpy as np

from semstore.encoders import Encoder


@dataclass
class _Batch:
    texts: list[str] = field(default_factory=list)
    futures: list[asyncio.Future[np.ndarray]] = field(default_factory=list)


class TextBatcher:
    """Collects text queries per encoder for up to ``max_wait_s`` (or ``max_batch`` texts)."""

    def __init__(self, limiter: anyio.CapacityLimiter, *, max_batch: int = 32, max_wait_s: float = 0.003) -> None:
        self._limiter = limiter
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._pending: dict[int, tuple[Encoder, _Batch]] = {}
        self._running: set[asyncio.Task[None]] = set()  # strong references until done

    async def encode(self, encoder: Encoder, text: str) -> np.ndarray:
        """The embedding ``(1, dim)`` of ``text``, computed in a batch with concurrent queries."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        key = id(encoder)
        entry = self._pending.get(key)
        if entry is None:
            entry = (encoder, _Batch())
            self._pending[key] = entry
            loop.call_later(self._max_wait_s, self._flush, key, entry[1])
        batch = entry[1]
        batch.texts.append(text)
        batch.futures.append(future)
        if len(batch.texts) >= self._max_batch:
            self._flush(key, batch)
        return await future

    def _flush(self, key: int, batch: _Batch) -> None:
        entry = self._pending.get(key)
        if entry is None or entry[1] is not batch:
            return  # already flushed (full batch), the timer fired late
        del self._pending[key]
        task = asyncio.get_running_loop().create_task(self._run(entry[0], batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, encoder: Encoder, batch: _Batch) -> None:
        try:
            embeddings = await anyio.to_thread.run_sync(encoder.encode_texts, batch.texts, limiter=self._limiter)
        except BaseException as exc:  # every waiting request gets the error
            for future in batch.futures:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for row, future in enumerate(batch.futures):
            if not future.done():
                future.set_result(embeddings[row : row + 1])
