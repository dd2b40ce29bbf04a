"""Dependencies routes declare with ``Annotated``: state, settings, database, collection, access.

``ReadAccess`` / ``WriteAccess`` take the caller that :class:`server.auth.AuthMiddleware`
authenticated and check the key's scope (403 ``insufficient_scope``); they also put the
bearer scheme into the OpenAPI schema. Routes list them in ``dependencies=[...]`` so that
they run before any other dependency (a missing collection must not answer before auth).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from semstore.collection import Collection
from semstore.config import Settings
from semstore.database import Database
from semstore.names import COLLECTION_NAME_PATTERN
from server.auth import SCOPE_KEY, Principal
from server.errors import ApiError
from server.state import AppState

#: Collection names as the library accepts them (never '.' or '..', no separators).
NAME_PATTERN = COLLECTION_NAME_PATTERN
#: Item ids are 64-bit integers.
MAX_ID = 2**63 - 1

_bearer = HTTPBearer(auto_error=False, description="An API key created with `semstore keys create`.")


def get_state(request: Request) -> AppState:
    return request.app.state.semstore


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_database(state: StateDep) -> Database:
    return state.database.get()


DatabaseDep = Annotated[Database, Depends(get_database)]

CollectionName = Annotated[str, Path(pattern=NAME_PATTERN, description="Collection name.")]
ItemId = Annotated[int, Path(ge=1, le=MAX_ID, description="Item id.")]


def get_collection(name: CollectionName, database: DatabaseDep) -> Collection:
    """The collection named in the path (404 ``collection_not_found`` if missing)."""
    return database.collection(name)


CollectionDep = Annotated[Collection, Depends(get_collection)]


def current_principal(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
) -> Principal:
    """The authenticated caller (401 if the middleware did not authenticate this request)."""
    principal = request.scope.get(SCOPE_KEY)
    if not isinstance(principal, Principal):
        raise ApiError(401, "missing_api_key", "this route needs an API key", headers={"WWW-Authenticate": "Bearer"})
    return principal


def require_read(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """Any valid key (both scopes may read)."""
    return principal


def require_write(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """A ``read-write`` key (403 ``insufficient_scope`` otherwise)."""
    if principal.scope != "read-write":
        raise ApiError(403, "insufficient_scope", f"API key {principal.name!r} is read-only; this route needs read-write")
    return principal


ReadAccess = Depends(require_read)
WriteAccess = Depends(require_write)
