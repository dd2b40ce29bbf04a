"""Request limits: body size per route (413), body read timeout (408), rate limiters (429)."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ApiError, error_response

if TYPE_CHECKING:
    from semstore.config import Settings


class PayloadTooLarge(ApiError):
    """The request body is larger than the limit of its route."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", f"request body larger than {limit} bytes", {"max_bytes": limit})


class BodyTimeout(ApiError):
    """The client stopped sending its request body."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            408, "request_timeout", f"no part of the request body arrived for {seconds:g} s", {"timeout_s": seconds}
        )


_UPLOAD_ROUTES = re.compile(r"^/v1/(codecs|collections/[^/]+/items|collections/[^/]+/search/image)/?$")
_IMPORT_ROUTE = re.compile(r"^/v1/collections/import/?$")


def body_limit(settings: Settings, method: str, path: str) -> int:
    """The largest body a request may send: archives and images get their own caps, JSON a small one."""
    if method == "POST" and _IMPORT_ROUTE.match(path):
        return settings.max_import_bytes
    if method == "POST" and _UPLOAD_ROUTES.match(path):
        return settings.max_upload_bytes
    return settings.max_json_bytes


class BodyLimitsMiddleware:
    """Bound every request body in size (413) and in how slowly it may arrive (408).

    The size limit depends on the route (:func:`body_limit`). A declared length over it is
    refused before the body is read; a chunked or under-declared body is counted as it
    arrives, and reading past the limit raises :class:`PayloadTooLarge`. Each body chunk
    must arrive within ``timeout`` seconds of the previous one, else :class:`BodyTimeout`
    (a dribbling client cannot hold a connection and a worker). The app's exception
    handlers (or this middleware, if the error escapes them) answer with the common shape.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = body_limit(self.settings, scope["method"], scope["path"])
        timeout = self.settings.body_timeout_seconds
        declared = _content_length(scope)
        if declared is not None and declared > max_bytes:
            await _refuse(PayloadTooLarge(max_bytes), scope, receive, send)
            return

        received = 0
        started = complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # e.g. a streaming response waiting for the disconnect: no deadline
                return await receive()
            try:
                with anyio.fail_after(timeout):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise PayloadTooLarge(max_bytes)
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (PayloadTooLarge, BodyTimeout) as error:
            if started:
                raise
            await _refuse(error, scope, receive, send)


async def _refuse(error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(error.status_code, error.code, error.message, error.error_detail, {"Connection": "close"})
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
        return self._take(key, take=True)

    def wait(self, key: str) -> int:
        """Seconds until ``key`` has a token (0: it has one now), without taking it."""
        return self._take(key, take=False)

    def _take(self, key: str, *, take: bool) -> int:
        if self.per_minute <= 0:
            return 0
        rate = self.per_minute / 60.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens >= 1.0:
                if take:
                    self._store(key, (tokens - 1.0, now))
                return 0
            if take:
                self._store(key, (tokens, now))
            return max(1, math.ceil((1.0 - tokens) / rate))

    def _store(self, key: str, bucket: tuple[float, float]) -> None:
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            # Forget the oldest bucket: a full bucket is what a forgotten key gets anyway.
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[key] = bucket
