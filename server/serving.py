"""Running the app under uvicorn with the server's connection limits.

uvicorn times out idle keep-alive connections, but not a client that opens a connection and
sends its request line and headers a byte at a time (slowloris): such a connection is held
forever. :func:`protocol_with_header_timeout` adds that deadline to uvicorn's own HTTP
protocol: a connection must deliver a request's complete headers within
``settings.header_timeout_seconds`` of connecting, or of its first byte after the previous
response, else it is closed. (A slow *body* is bounded by :class:`server.limits.BodyLimitsMiddleware`.)
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

    from semstore.config import Settings

logger = logging.getLogger("semstore.server")


def protocol_with_header_timeout(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's default HTTP protocol class, closing connections whose headers arrive too slowly."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _header_timer: asyncio.TimerHandle | None = None
        _seen_cycle: object = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = getattr(self, "cycle", None)
            if cycle is not None and cycle is not self._seen_cycle:
                self._seen_cycle = cycle  # a request's headers are complete
                self._disarm()
            elif self._idle():
                self._arm()  # bytes of a next request: its headers are now due

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _idle(self) -> bool:
            cycle = getattr(self, "cycle", None)
            return cycle is None or cycle.response_complete

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if self._idle() and not self.transport.is_closing():
                client = getattr(self, "client", None)
                logger.info("closed a connection from %s: no complete request headers within %gs", client, header_timeout)
                self.transport.close()

    return HeaderTimeoutProtocol


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """A uvicorn configuration for ``app`` (an ASGI app, or an import string with ``factory=True``)."""
    import uvicorn

    values: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": protocol_with_header_timeout(settings.header_timeout_seconds),
        "timeout_keep_alive": 5,
        "timeout_graceful_shutdown": 10,
    }
    values.update(overrides)
    return uvicorn.Config(app, **values)


def serve(settings: Settings, **overrides: Any) -> None:
    """Run ``server.app:create_app`` (settings from the environment) until interrupted."""
    import uvicorn

    server = uvicorn.Server(uvicorn_config("server.app:create_app", settings, factory=True, **overrides))
    try:
        server.run()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C / SIGINT it shut down on; the shutdown is complete

