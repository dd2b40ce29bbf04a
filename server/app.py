"""FastAPI application factory (run with ``uvicorn --factory server.app:create_app``).

For now the app only reports its health; the API routers come with the server issue.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from semstore.config import Settings
    from semstore.database import Database


class DatabaseHolder:
    """Connects to the database on first use (so the app starts even while it is down)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._database: Database | None = None
        self._lock = threading.Lock()

    def get(self) -> Database:
        """The connected (and migrated) database."""
        with self._lock:
            if self._database is None:
                import semstore

                self._database = semstore.connect(self.settings.resolved_database_url(), settings=self.settings)
            return self._database

    def close(self) -> None:
        with self._lock:
            if self._database is not None:
                self._database.close()
                self._database = None


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application; ``settings`` default to :func:`semstore.config.get_settings` (env vars)."""
    from semstore import __version__
    from semstore.config import get_settings

    holder = DatabaseHolder(settings or get_settings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        holder.close()

    app = FastAPI(title="semstore", version=__version__, lifespan=lifespan)
    app.state.settings = holder.settings
    app.state.database = holder

    @app.get("/health", tags=["health"])
    def health() -> JSONResponse:
        """``{"status": "ok", "database": "ok"}``, or 503 with the database error."""
        from sqlalchemy import text

        try:
            with holder.get().engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # any failure to reach the database means "not healthy"
            message = " ".join(str(getattr(exc, "orig", None) or exc).split())
            return JSONResponse({"status": "error", "database": message}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    return app
