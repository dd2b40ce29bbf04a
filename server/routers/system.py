"""Liveness/readiness (``/health``, public) and Prometheus metrics (``/metrics``, needs a key)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Response
from sqlalchemy import text

from semstore import __version__
from server.deps import ReadAccess, StateDep
from server.errors import COMMON_ERRORS, ErrorResponse, error_response
from server.schemas import HealthOut
from server.state import AppState

router = APIRouter(tags=["system"])


@router.get(
    "/health",
    response_model=HealthOut,
    responses={503: {"model": ErrorResponse, "description": "The database or the indexes are not ready."}},
)
async def health(state: StateDep) -> Any:
    """``ok`` when the database answers and every collection's index is loaded; else 503 with the reason."""
    problem = await anyio.to_thread.run_sync(_check, state)
    if problem is not None:
        return error_response(503, "unhealthy", "the service is not ready", problem)
    return HealthOut(status="ok", database="ok", index="ready", version=__version__)


def _check(state: AppState) -> dict[str, str] | None:
    try:
        with state.database.get().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach the database means "not healthy"
        return {"database": " ".join(str(getattr(exc, "orig", None) or exc).split()), "index": state.warmup.state}
    if not state.warmup.run():
        return {"database": "ok", "index": f"error: {state.warmup.error}"}
    return None


@router.get(
    "/metrics",
    dependencies=[ReadAccess],
    response_class=Response,
    responses={
        **COMMON_ERRORS,
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format."},
    },
)
async def metrics(state: StateDep) -> Response:
    """Request counts and latencies per route, items per collection and loaded index sizes."""
    body = await anyio.to_thread.run_sync(state.metrics.render)
    return Response(body, media_type=state.metrics.content_type)
