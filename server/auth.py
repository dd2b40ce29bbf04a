"""API-key authentication, done by a middleware before any request body is read.

Only ``Authorization: Bearer <key>`` is accepted (a key in the query string is never
read). Every path except the public ones (:data:`PUBLIC_PATHS`, :data:`PUBLIC_PREFIXES`:
``/health``, the search page's static files and the API documentation) needs a valid key:
401 for a missing, malformed, unknown or revoked key, 429 with ``Retry-After`` past the
key's rate limit. Scopes (403) are checked per route by :mod:`server.deps`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass


import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import ApiError, error_response
from server.state import AppState

#: Paths anyone may request: liveness, the search page and the API docs.
PUBLIC_PATHS: frozenset[str] = frozenset(
    {"/health", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/favicon.ico"}
)
#: Where the API documentation's own script and style files are served (fastapi-offline).
DOCS_STATIC_URL = "/static-docs"
#: Path prefixes anyone may request (the page's and the docs' static files).
PUBLIC_PREFIXES: tuple[str, ...] = ("/static/", DOCS_STATIC_URL + "/")

SCOPE_KEY = "semstore.principal"

logger = logging.getLogger("semstore.server")


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key (by id and name) or, with keys disabled, the local user."""

    key_id: int | None
    name: str
    scope: str


def is_public(path: str) -> bool:
    """Whether ``path`` is served without an API key."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="semstore"'})


def authenticate(state: AppState, authorization: str | None, client: str) -> Principal:
    """The caller behind an ``Authorization`` header value; raises :class:`ApiError` 401/429.

    Blocking (one indexed database lookup): call it from a worker thread.
    """
    if state.settings.api_keys_disabled:
        principal = Principal(None, "local", "read-write")
        bucket = f"client:{client}"
    else:
        principal = _check_key(state, authorization, client)
        bucket = f"key:{principal.key_id}"
    wait = state.rate_limiter.check(bucket)
    if wait:
        raise _rate_limited(f"rate limit of {state.rate_limiter.per_minute} requests per minute exceeded", wait)
    return principal


def _rate_limited(message: str, wait: int) -> ApiError:
    return ApiError(429, "rate_limited", f"{message}; retry in {wait}s", {"retry_after_s": wait}, headers={"Retry-After": str(wait)})


def _check_key(state: AppState, authorization: str | None, client: str) -> Principal:
    """The key's principal; 401 for a bad key, 429 once the address sent too many bad keys."""
    from semstore import apikeys

    failures = state.auth_failures
    address = f"address:{client}"
    wait = failures.wait(address)
    if wait:  # refused before any database lookup
        raise _rate_limited(f"too many requests without a valid API key from {client}", wait)
    try:
        if authorization is None:
            raise _unauthorized("missing_api_key", "this route needs an API key: send 'Authorization: Bearer <key>'")
        scheme, _, secret = authorization.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not apikeys.is_well_formed(secret):
            raise _unauthorized("malformed_api_key", "the Authorization header must be 'Bearer <key>' with a semstore key")
        sessions = state.database.get().sessions
        key = apikeys.lookup_api_key(sessions, secret)
        if key is None:
            raise _unauthorized("invalid_api_key", "unknown API key")
        if key.revoked:
            raise _unauthorized("revoked_api_key", "this API key has been revoked")
    except ApiError:
        failures.check(address)
        raise
    if state.should_touch(key.id):
        apikeys.touch_api_key(sessions, key.id)
    return Principal(key.id, key.name, key.scope)


class AuthMiddleware:
    """Authenticates every non-public HTTP request and puts the :class:`Principal` in the scope."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        client = scope["client"][0] if scope.get("client") else "unknown"
        try:
            principal = await anyio.to_thread.run_sync(authenticate, self.state, authorization, client)
        except ApiError as error:
            response = error_response(error.status_code, error.code, error.message, error.error_detail, error.headers)
            await response(scope, receive, send)
            return
        except SQLAlchemyError:
            logger.exception("cannot check an API key: database unavailable")
            await error_response(503, "unavailable", "the database is unavailable")(scope, receive, send)
            return
        scope[SCOPE_KEY] = principal
        await self.app(scope, receive, send)
