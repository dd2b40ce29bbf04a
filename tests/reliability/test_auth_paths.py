"""Item 5: auth over the whole route table, path-ingest traversal, SQL-significant strings.

* Every route of the app's route table (so a new route is covered automatically) x every
  method x {no key, malformed key, wrong key, revoked key, wrong scope, key in the query
  string}: 401 / 403 with the error shape, except the public allowlist (``/health``, ``/``).
  A read-only key is the wrong scope for write routes; read routes have no lesser scope.
* Path ingest refuses ``..``, absolute paths outside the roots, symlinks leaving the root
  (file, folder, inside a requested folder), percent-encoded and backslash variants, NUL
  bytes, relative and ``~`` paths; nothing outside the root is ever stored, and a refusal
  does not tell whether an outside path exists.
* SQL-significant strings in every text field (file names, metadata keys and values,
  filters, search texts, labels, templates, key names) are stored and returned literally,
  on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import semstore
from semstore import apikeys
from semstore.names import is_valid_collection_name
from server.app import api_routes
from server.auth import is_public
from server.deps import require_read, require_write
from tests.e2e.conftest import LiveServer, e2e_settings, start_server
from tests.reliability.conftest import COLLECTION, encoder_factory, error_shape, figures, image_bytes, settings_for

pytestmark = pytest.mark.reliability

SQL_STRINGS = [
    "'; DROP TABLE items; --",
    "Robert'); DROP TABLE students;--",
    "' OR '1'='1",
    "\" OR \"\"=\"",
    "1; SELECT * FROM api_keys",
    "' UNION SELECT key_hash, scope FROM api_keys --",
    "%",
    "_",
    "%_%",
    "\\",
    "\\'",
    "$1",
    "?",
    ":name",
    "$.metadata",
    "{}",
    "[1]",
    "é 漢字 🙂",
    "a\u2028b",
    "--",
    "/* comment */",
    "`backtick`",
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, shipped_codec, tiny_encoder) -> Iterator[tuple[LiveServer, dict[str, str], Path]]:  # noqa: ANN001
    root = tmp_path_factory.mktemp("auth")
    (root / "allowed").mkdir()
    settings = e2e_settings(root, allowed_ingest_roots=[root / "allowed"], codec_num_subvectors=8)
    database = semstore.connect(settings.resolved_database_url(), settings=settings, encoder_factory=encoder_factory(tiny_encoder))
    database.create_collection(COLLECTION, codec=shipped_codec[0])
    database.collection(COLLECTION).add_images([("one.png", image_bytes(1))])
    keys = {
        "admin": apikeys.create_api_key(database.sessions, "admin", "read-write")[1],
        "reader": apikeys.create_api_key(database.sessions, "reader", "read")[1],
        "revoked": apikeys.create_api_key(database.sessions, "revoked", "read-write")[1],
    }
    apikeys.revoke_api_key(database.sessions, "revoked")
    database.close()
    server = start_server(settings)
    try:
        yield server, keys, root
    finally:
        server.stop()


def _sample_path(path: str) -> str:
    return path.replace("{name}", COLLECTION).replace("{item_id}", "1")


def test_every_route_x_every_bad_credential(live) -> None:  # noqa: ANN001
    server, keys, _ = live
    routes = api_routes(server.app)
    public = {route.path for route in routes if is_public(route.path)}
    assert public <= {"/health", "/", "/docs", "/docs/oauth2-redirect", "/redoc"}, public  # (docs: served offline)
    variants = {
        "no key": ({}, {}),
        "malformed: no scheme": ({"Authorization": keys["admin"]}, {}),
        "malformed: Basic": ({"Authorization": "Basic dXNlcjpwYXNz"}, {}),
        "malformed: Bearer only": ({"Authorization": "Bearer"}, {}),
        "malformed: not a key": ({"Authorization": "Bearer ssk_short"}, {}),
        "wrong key": ({"Authorization": f"Bearer {apikeys.generate_api_key()}"}, {}),
        "revoked key": ({"Authorization": f"Bearer {keys['revoked']}"}, {}),
        "key in query string": ({}, {"api_key": keys["admin"], "key": keys["admin"], "token": keys["admin"]}),
    }
    expected_codes = {"no key": "missing_api_key", "wrong key": "invalid_api_key", "revoked key": "revoked_api_key", "key in query string": "missing_api_key"}
    tried = refused = scope_checked = public_served = 0
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for route in routes:
            calls = {dependency.call for dependency in route.dependant.dependencies}
            for method in sorted(route.methods):
                path = _sample_path(route.path)
                if route.path in public:
                    for headers, params in variants.values():
                        tried += 1
                        assert client.request(method, path, headers=headers, params=params).status_code == 200, path
                        public_served += 1
                    continue
                assert calls & {require_read, require_write}, f"{route.path} declares no access dependency"
                for variant, (headers, params) in variants.items():
                    tried += 1
                    response = client.request(method, path, headers=headers, params=params)
                    error = error_shape(response)
                    assert response.status_code == 401 and error is not None, (method, path, variant, response.text[:200])
                    assert error["code"] == expected_codes.get(variant, "malformed_api_key"), (method, path, variant, error)
                    refused += 1
                if require_write in calls:
                    tried += 1
                    response = client.request(method, path, headers={"Authorization": f"Bearer {keys['reader']}"})
                    error = error_shape(response)
                    assert response.status_code == 403 and error and error["code"] == "insufficient_scope", (method, path)
                    scope_checked += 1
    figures("auth-matrix", routes=len(routes), requests=tried, refused_401=refused, refused_403_scope=scope_checked, public_allowlist=sorted(public), public_requests=public_served)
    assert refused >= 15 * len(variants) and scope_checked >= 8


def test_path_ingest_refuses_traversal(live) -> None:  # noqa: ANN001
    server, keys, root = live
    allowed, outside = root / "allowed", root / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.png").write_bytes(image_bytes(4242))
    (allowed / "inside.png").write_bytes(image_bytes(4343))
    (allowed / "sub").mkdir(exist_ok=True)
    for link, target in (("link.png", outside / "secret.png"), ("linkdir", outside)):
        if not (allowed / link).is_symlink():
            os.symlink(target, allowed / link)
    mixed = allowed / "mixed"
    mixed.mkdir(exist_ok=True)
    (mixed / "real.png").write_bytes(image_bytes(4444))
    if not (mixed / "escape.png").is_symlink():
        os.symlink(outside / "secret.png", mixed / "escape.png")
    a, o = str(allowed), str(outside)
    refused_paths = [
        f"{a}/../outside/secret.png",
        f"{a}/sub/../../outside/secret.png",
        f"{a}/../outside",
        f"{a}/..",
        f"{o}/secret.png",
        o,
        "/etc/passwd",
        "/",
        "secret.png",
        "../outside/secret.png",
        "~/secret.png",
        f"{a}/link.png",
        f"{a}/linkdir",
        f"{a}/linkdir/secret.png",
        f"{a}/%2e%2e/outside/secret.png",
        f"{a}/..%2foutside%2fsecret.png",
        f"{a}/%252e%252e/outside/secret.png",
        f"{a}\\..\\outside\\secret.png",
        f"{a}/inside.png\x00.txt",
        f"{a}/\x00/../outside/secret.png",
        f"{a}/.%00./outside/secret.png",
        f"{o}/does-not-exist.png",
    ]
    statuses: dict[int, int] = {}
    messages: dict[str, str] = {}
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {keys['admin']}"}, timeout=60) as client:
        ingest = f"/v1/collections/{COLLECTION}/items/ingest"
        for path in refused_paths:
            response = client.post(ingest, json={"paths": [path]})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            error = error_shape(response)
            assert 400 <= response.status_code < 500 and error is not None, (path, response.status_code, response.text[:300])
            messages[path] = str(error["message"]).replace(path, "<path>")
        # The answer for an existing outside file equals the one for a missing outside file.
        assert messages[f"{o}/secret.png"] == messages[f"{o}/does-not-exist.png"]
        mixed_response = client.post(ingest, json={"paths": [str(mixed)]})
        assert mixed_response.status_code == 200, mixed_response.text
        by_status = {entry["status"] for entry in mixed_response.json()["files"]}
        assert by_status == {"added", "failed"}, mixed_response.text
        control = client.post(ingest, json={"paths": [f"{a}/sub/../inside.png"]})  # stays inside the root
        assert control.status_code == 200 and control.json()["added"] == 1, control.text
        sources = [
            client.get(f"/v1/collections/{COLLECTION}/items/{item_id}").json().get("source_uri", "")
            for item_id in range(1, 10)
        ]
    assert not [s for s in sources if s.startswith(o) or "secret" in s], sources
    figures("path-ingest-traversal", cases=len(refused_paths) + 1, status_counts=statuses, stored_outside_root=0)


def test_sql_significant_strings_are_stored_literally(db_url: str, tmp_path: Path, shipped_codec, tiny_encoder) -> None:  # noqa: ANN001
    settings = settings_for(db_url, tmp_path / "data")
    database = semstore.connect(db_url, settings=settings, encoder_factory=encoder_factory(tiny_encoder))
    photos = database.create_collection(COLLECTION, codec=shipped_codec[0])
    checked = 0
    try:
        for index, value in enumerate(SQL_STRINGS):
            name = value.replace("/", "").replace("\\", "") or "x"  # a client path separator starts the base name
            report = photos.add_images([(f"{name}.png", image_bytes(7000 + index))], metadata={value: value, "v": value})
            ((source, item_id),) = report.added_items
            item = photos.get(item_id)
            assert source.endswith(f"/{name}.png") and item.source_uri == source
            assert item.metadata == {value: value, "v": value}
            if '"' not in value:
                assert list(database.collection(COLLECTION).search(item=item_id, k=1, where={value: value}))[0].id == item_id
            found = photos.search(item=item_id, k=50, where={"v": value})
            assert [hit.id for hit in found] == [item_id], value
            assert photos.update_metadata(item_id, {"patched": value}) == {value: value, "v": value, "patched": value}
            # Key and collection names are restricted to safe patterns: refused, never run.
            with pytest.raises(ValueError):
                apikeys.create_api_key(database.sessions, f"key {value}", "read")
            if is_valid_collection_name(value):  # e.g. "a.b": a valid name, stored as given
                assert database.create_collection(value).name == value
                database.delete_collection(value)
            else:
                with pytest.raises(ValueError):
                    database.create_collection(value)
            checked += 1
        assert [key.name for key in apikeys.list_api_keys(database.sessions)] == []
        assert [c.name for c in database.collections()] == [COLLECTION]
        assert photos.stats().items == len(SQL_STRINGS)  # nothing dropped, nothing extra
        hits = photos.search(text=SQL_STRINGS[0], k=3)
        assert len(hits) == 3
        labels = photos.classify(SQL_STRINGS[:4], template="{} ' OR 1=1 --")
        assert labels is not None
    finally:
        database.close()
    figures(f"sql-strings[{db_url.split(':')[0]}]", strings=len(SQL_STRINGS), fields="file name, metadata key/value, where, patch, search text, labels/template stored literally; key/collection names refused", checked=checked)


def test_sql_significant_strings_over_http(live) -> None:  # noqa: ANN001
    server, keys, _ = live
    coll = f"/v1/collections/{COLLECTION}"
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {keys['admin']}"}, timeout=60) as client:
        for index, value in enumerate(SQL_STRINGS):
            # (httpx writes '"' in a multipart file name as %22, so quotes stay out of the name)
            name = value.replace("/", "").replace("\\", "").replace('"', "") or "x"
            response = client.post(
                f"{coll}/items",
                files={"files": (f"{name}.png", image_bytes(9000 + index), "image/png")},
                data={"metadata": json.dumps({"v": value})},
            )
            assert response.status_code == 200, (value, response.text)
            (entry,) = response.json()["files"]
            item = client.get(f"{coll}/items/{entry['id']}").json()
            assert item["source_uri"].endswith(f"/{name}.png") and item["metadata"] == {"v": value}, (value, item)
            hits = client.post(f"{coll}/search", json={"item_id": entry["id"], "k": 5, "where": {"v": value}}).json()["hits"]
            assert [hit["id"] for hit in hits] == [entry["id"]], value
            patched = client.patch(f"{coll}/items/{entry['id']}", json={"metadata": {"w": value}})
            assert patched.status_code == 200 and patched.json()["metadata"] == {"v": value, "w": value}
            assert client.post(f"{coll}/search", json={"text": value, "k": 3}).status_code == 200
        classify = client.post(f"{coll}/classify", json={"labels": SQL_STRINGS[:5], "template": "{} '--"})
        assert classify.status_code == 200, classify.text
        assert client.get("/v1/collections").json()["collections"][0]["name"] == COLLECTION
