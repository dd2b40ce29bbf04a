"""FastAPI application factory (``uvicorn --factory server.app:create_app``, or ``semstore serve``).

One :class:`~semstore.database.Database` per app, connected on first use and shared by
every request; encoder work runs in worker threads, at most ``settings.inference_concurrency``
at a time, never on the event loop; uploads and path ingests run in niced worker processes
(``settings.ingest_processes``, see :mod:`server.ingest_process`; 0: on niced threads, then
counted against ``inference_concurrency`` too).
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from server import routers
from server.routers import duplicates as duplicates_routes
from server.auth import DOCS_STATIC_URL, AuthMiddleware
from server.errors import install_error_handlers
from server.limits import BodyLimitsMiddleware
from server.metrics import MetricsMiddleware
from server.replica import IndexPoller
from server.routers.page import STATIC_DIR
from server.state import AppState

if TYPE_CHECKING:
    from semstore.config import Settings
    from semstore.database import EncoderFactory

logger = logging.getLogger("semstore.server")


class InsecureSettingsError(ValueError):
    """The settings would expose an unauthenticated API beyond the local machine."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_settings(settings: Settings) -> None:
    """Refuse ``api_keys_disabled`` unless the server is bound to a loopback address."""
    if settings.api_keys_disabled and not is_loopback(settings.host):
        raise InsecureSettingsError(
            f"api_keys_disabled is only allowed on a loopback address, not on host {settings.host!r}: "
            "create keys with `semstore keys create` instead"
        )


def create_app(settings: Settings | None = None, encoder_factory: EncoderFactory | None = None) -> FastAPI:
    """The application; ``settings`` default to :func:`semstore.config.get_settings` (env vars).

    ``encoder_factory(model, pretrained)`` replaces the default open_clip encoders (tests).
    Raises :class:`InsecureSettingsError` for keys disabled on a non-loopback host.
    """
    from semstore import __version__
    from semstore.config import get_settings

    settings = settings or get_settings()
    check_settings(settings)
    state = AppState.build(settings, encoder_factory)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(settings.switch_interval_ms / 1000)
        state.ingest.start()  # a worker process starts (imports torch) now, not at the first upload
        # Loading the indexes before the first request makes /health's readiness meaningful.
        ready = await anyio.to_thread.run_sync(state.warmup.run)
        if not ready:
            logger.warning("indexes not loaded at startup: %s", state.warmup.error)
        poller = IndexPoller(state.database.get, settings.index_poll_seconds) if settings.index_poll_seconds > 0 else None
        if poller is not None:
            poller.start()
        try:
            yield
        finally:
            if poller is not None:
                await anyio.to_thread.run_sync(poller.stop)
            await anyio.to_thread.run_sync(state.ingest.shutdown)  # waits for running ingests
            state.database.close()
            sys.setswitchinterval(switch_interval)

    # FastAPIOffline: /docs and /redoc load Swagger UI / ReDoc from files the package ships,
    # not from a CDN, so the docs work on an air-gapped archive server.
    app = FastAPIOffline(
        static_url=DOCS_STATIC_URL,
        title="semstore",
        version=__version__,
        description="Compressed semantic image search: CLIP embeddings stored as PQ-VAE codes. "
        "Every route but /health needs `Authorization: Bearer <key>` (keys: `semstore keys create`).",
        lifespan=lifespan,
    )
    app.state.semstore = state
    app.state.settings = settings
    install_error_handlers(app)

    app.include_router(routers.system.router)
    app.include_router(routers.collections.router)
    app.include_router(routers.items.router)
    app.include_router(routers.search.router)
    app.include_router(duplicates_routes.router)
    app.include_router(routers.page.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # Added innermost first: CORS sees everything, auth runs before any body is read.
    app.add_middleware(BodyLimitsMiddleware, settings=settings)
    app.add_middleware(AuthMiddleware, state=state)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route of ``app``, looking inside included routers (for audits, e.g. of auth)."""
    found: list[APIRoute] = []

    def walk(routes: Iterable[object]) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.append(route)
            # Recent FastAPI versions wrap included routers instead of copying their routes.
            original = getattr(route, "original_router", None)
            if original is not None:
                walk(original.routes)

    walk(app.routes)
    return found
