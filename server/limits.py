"""Request limits: the body size cap (413) and the per-key rate limiter (429)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ApiError, error_response


class PayloadTooLarge(ApiError):
    """The request body is larger than the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", f"request body larger than {limit} bytes", {"max_bytes": limit})


class BodySizeLimitMiddleware:
    """Answer 413 to bodies over ``max_bytes``: at once from ``Content-Length``, else while streaming.

    A declared length over the limit is refused before the body is read. A chunked or
    under-declared body is counted as it arrives, and reading past the limit raises
    :class:`PayloadTooLarge`, which the app's exception handlers (or this middleware, if it
    escapes them) turn into the common error shape.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            error = PayloadTooLarge(self.max_bytes)
            response = error_response(413, error.code, error.message, error.error_detail, {"Connection": "close"})
            await response(scope, receive, send)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge as error:
            if started:
                raise
            response = error_response(413, error.code, error.message, error.error_detail, {"Connection": "close"})
            await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RateLimiter:
    """A token bucket per client key: ``per_minute`` requests a minute, bursts up to the same.

    ``check(key)`` returns 0 when the request may go ahead, else the seconds to wait.
    Thread-safe; ``per_minute=0`` disables limiting. ``clock`` is injectable for tests.
    """

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> int:
        """Take one token for ``key``; 0 if allowed, else whole seconds until one is available."""
        if self.per_minute <= 0:
            return 0
        rate = self.per_minute / 60.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._store(key, (tokens - 1.0, now))
                return 0
            self._store(key, (tokens, now))
            return max(1, math.ceil((1.0 - tokens) / rate))

    def _store(self, key: str, bucket: tuple[float, float]) -> None:
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            # Forget the oldest bucket: a full bucket is what a forgotten key gets anyway.
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[key] = bucket
