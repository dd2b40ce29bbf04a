"""API keys over HTTP: 401 / 403 / 429, every route covered, keys created and revoked with the CLI."""

from __future__ import annotations

import re

import httpx
import pytest
from typer.testing import CliRunner

from semstore import apikeys
from semstore.cli.app import app as cli
from server.app import InsecureSettingsError, api_routes, create_app
from server.auth import is_public
from server.deps import require_read, require_write
from tests.e2e.conftest import COLLECTION, Photos, assert_error, e2e_settings, start_server

SEARCH = f"/v1/collections/{COLLECTION}/search"


def _unauthorized(response: httpx.Response, code: str) -> None:
    assert_error(response, 401, code)
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_missing_malformed_wrong_and_revoked_keys(photos: Photos) -> None:
    revoked = photos.add_key("soon-revoked", "read")
    with photos.client() as client:
        _unauthorized(client.get("/v1/collections"), "missing_api_key")
        for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-key", f"Token {photos.keys.admin}", photos.keys.admin):
            _unauthorized(client.get("/v1/collections", headers={"Authorization": header}), "malformed_api_key")
        unknown = apikeys.generate_api_key()
        _unauthorized(client.get("/v1/collections", headers={"Authorization": f"Bearer {unknown}"}), "invalid_api_key")
        # A key in the query string is never read.
        for name in ("api_key", "key", "token", "access_token"):
            _unauthorized(client.get("/v1/collections", params={name: photos.keys.admin}), "missing_api_key")

        assert client.get("/v1/collections", headers={"Authorization": f"Bearer {revoked}"}).status_code == 200
        apikeys.revoke_api_key(photos.server.app.state.semstore.database.get().sessions, "soon-revoked")
        _unauthorized(client.get("/v1/collections", headers={"Authorization": f"Bearer {revoked}"}), "revoked_api_key")


def test_read_key_cannot_write(photos: Photos) -> None:
    with photos.client(photos.keys.reader) as client:
        assert client.post(SEARCH, json={"text": "x", "k": 1}).status_code == 200
        assert_error(client.post("/v1/collections", json={"name": "nope"}), 403, "insufficient_scope")
        assert_error(client.delete(f"/v1/collections/{COLLECTION}"), 403, "insufficient_scope")
        assert client.get(f"/v1/collections/{COLLECTION}").status_code == 200


def _sample_path(path: str) -> str:
    return path.replace("{name}", COLLECTION).replace("{item_id}", "1")


def test_every_route_needs_a_key_and_write_routes_need_read_write(photos: Photos) -> None:
    """Walks the app's route table, so a route added later is covered without editing this test."""
    routes = api_routes(photos.server.app)
    protected = [route for route in routes if not is_public(route.path)]
    assert len(protected) >= 15
    # (the API docs pages are routes of the app since they are served offline: public, as before)
    assert {route.path for route in routes if is_public(route.path)} <= {"/health", "/", "/docs", "/docs/oauth2-redirect", "/redoc"}
    writes = 0
    with photos.client() as anonymous, photos.client(photos.keys.reader) as reader:
        for route in protected:
            calls = {dependency.call for dependency in route.dependant.dependencies}
            assert calls & {require_read, require_write}, f"{route.path} declares no access dependency"
            for method in route.methods:
                path = _sample_path(route.path)
                _unauthorized(anonymous.request(method, path), "missing_api_key")
                garbage = {"Authorization": f"Bearer {apikeys.generate_api_key()}"}
                _unauthorized(anonymous.request(method, path, headers=garbage), "invalid_api_key")
                if require_write in calls:
                    writes += 1
                    assert_error(reader.request(method, path), 403, "insufficient_scope")
    assert writes >= 8
    # Unknown paths do not reveal themselves to anonymous callers either.
    with photos.client() as anonymous:
        _unauthorized(anonymous.get("/v1/nothing-here"), "missing_api_key")


def test_rate_limit_answers_429_with_retry_after(photos: Photos, tmp_path) -> None:
    # A second app on the same database, with a tiny per-key budget.
    settings = e2e_settings(photos.root, data_dir=tmp_path / "data", rate_limit_per_minute=3)
    server = start_server(settings)
    other = photos.add_key("rate-other", "read")
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {photos.keys.reader}"}) as client:
            assert [client.get("/v1/collections").status_code for _ in range(3)] == [200, 200, 200]
            limited = client.get("/v1/collections")
            assert_error(limited, 429, "rate_limited")
            assert 1 <= int(limited.headers["retry-after"]) <= 60
            assert client.get("/health").status_code == 200  # public routes are not limited
            assert client.get("/v1/collections", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    finally:
        server.stop()


def test_keys_cannot_be_disabled_on_a_public_interface(tmp_path) -> None:
    with pytest.raises(InsecureSettingsError):
        create_app(e2e_settings(tmp_path, api_keys_disabled=True, host="0.0.0.0"))
    server = start_server(e2e_settings(tmp_path, api_keys_disabled=True, host="127.0.0.1"))
    try:
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/v1/collections").json() == {"collections": []}
    finally:
        server.stop()


def test_cli_keys_work_against_the_server(photos: Photos) -> None:
    runner = CliRunner()
    db = ["--db", photos.settings.resolved_database_url()]
    created = runner.invoke(cli, ["keys", "create", "cli-made", "--scope", "read-write", *db])
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert re.fullmatch(r"ssk_[A-Za-z0-9_-]{43}", secret)
    assert "shown only once" in created.stderr

    listed = runner.invoke(cli, ["keys", "list", "--json", *db])
    assert '"name": "cli-made"' in listed.stdout and secret not in listed.stdout
    with photos.client(secret) as client:
        assert client.get("/v1/collections").status_code == 200
        revoked = runner.invoke(cli, ["keys", "revoke", "cli-made", *db])
        assert revoked.exit_code == 0, revoked.output
        _unauthorized(client.get("/v1/collections"), "revoked_api_key")
    assert runner.invoke(cli, ["keys", "create", "bad", "--scope", "admin", *db]).exit_code == 1
