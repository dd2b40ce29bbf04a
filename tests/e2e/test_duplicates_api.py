"""``GET /v1/collections/{name}/duplicates`` over HTTP against the live server.

The route must answer what :func:`semstore.duplicates.find_duplicates` finds on the server's
own index (the grouping itself is tested in ``tests/integration/test_duplicates.py``), with
source URIs, under read scope, with the common error shape for bad parameters.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from semstore.duplicates import DEFAULT_THRESHOLD, find_duplicates
from tests.e2e.conftest import Photos, assert_error, encode, make_image

NAME = "dupes"
#: Decoded cosine at which the tiny test model separates copies from other pictures here.
THRESHOLD = 0.995


def _copies(index: int) -> dict[str, bytes]:
    image = make_image(100 + index, size=80 + 16 * index)
    jpeg = io.BytesIO()
    image.save(jpeg, format="JPEG", quality=50)
    return {
        f"p{index}.png": encode(image, "PNG"),
        f"p{index}-resized.png": encode(image.resize((image.width // 2, image.height // 2), Image.LANCZOS), "PNG"),
        f"p{index}-q50.jpg": jpeg.getvalue(),
        f"p{index}-crop.png": encode(image.crop((0, 0, round(image.width * 0.95), round(image.height * 0.95))), "PNG"),
    }


@pytest.fixture(scope="module")
def dupes(photos: Photos) -> Iterator[dict[str, int]]:
    """Collection ``dupes``: four pictures with three copies each (one upload: the codec is trained on them)."""
    files = {name: data for i in range(4) for name, data in _copies(i).items()}
    with photos.client(photos.keys.admin) as client:
        assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
        response = client.post(
            f"/v1/collections/{NAME}/items",
            files=[("files", (name, data, "image/jpeg" if name.endswith("jpg") else "image/png")) for name, data in files.items()],
        )
        assert response.status_code == 200, response.text
        ids = {entry["source"]: entry["id"] for entry in response.json()["files"]}
        assert len(ids) == len(files) and all(ids.values())
        yield ids
        assert client.delete(f"/v1/collections/{NAME}").status_code == 204


def _library_groups(photos: Photos, threshold: float) -> list[tuple[int, ...]]:
    index = photos.server.app.state.semstore.database.get().collection(NAME).index
    assert index is not None
    return [group.ids for group in find_duplicates(index, threshold=threshold)]


def test_groups_with_source_uris(photos: Photos, dupes: dict[str, int]) -> None:
    with photos.client(photos.keys.reader) as client:  # read scope is enough
        response = client.get(f"/v1/collections/{NAME}/duplicates", params={"threshold": THRESHOLD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["threshold"] == THRESHOLD and body["total"] == len(body["groups"])
    assert [tuple(group["ids"]) for group in body["groups"]] == _library_groups(photos, THRESHOLD)
    names = {item_id: name for name, item_id in dupes.items()}
    group_of = {}
    for number, group in enumerate(body["groups"]):
        assert group["ids"] == sorted(group["ids"])
        assert [uri.rsplit("/", 1)[1] for uri in group["source_uris"]] == [names[i] for i in group["ids"]]
        assert THRESHOLD - 1e-6 <= group["min_similarity"] <= group["max_similarity"] <= 1 + 1e-6
        group_of.update(dict.fromkeys(group["ids"], number))
    for name, item_id in dupes.items():  # every copy is with its picture
        original = name.split("-")[0].split(".")[0] + ".png"
        if name != original:
            assert item_id in group_of and group_of[item_id] == group_of.get(dupes[original]), name


def test_default_threshold_and_limit(photos: Photos, dupes: dict[str, int]) -> None:
    with photos.client(photos.keys.reader) as client:
        default = client.get(f"/v1/collections/{NAME}/duplicates").json()
        limited = client.get(f"/v1/collections/{NAME}/duplicates", params={"threshold": THRESHOLD, "limit": 1}).json()
    assert default["threshold"] == DEFAULT_THRESHOLD
    assert [tuple(group["ids"]) for group in default["groups"]] == _library_groups(photos, DEFAULT_THRESHOLD)
    assert default["limit"] == photos.settings.max_page_size  # the default page (100) capped by the server's
    assert limited["limit"] == 1 and len(limited["groups"]) == 1 and limited["total"] == len(_library_groups(photos, THRESHOLD))


@pytest.mark.parametrize("threshold", ["0", "-0.1", "1.5", "nan", "inf", "abc"])
def test_bad_threshold_is_422(photos: Photos, dupes: dict[str, int], threshold: str) -> None:
    with photos.client(photos.keys.reader) as client:
        response = client.get(f"/v1/collections/{NAME}/duplicates", params={"threshold": threshold})
    error = assert_error(response, 422, "validation_error")
    assert "threshold" in error["message"]


def test_bad_limits_and_missing_collection(photos: Photos, dupes: dict[str, int]) -> None:
    with photos.client(photos.keys.reader) as client:
        too_many = client.get(f"/v1/collections/{NAME}/duplicates", params={"limit": photos.settings.max_page_size + 1})
        assert "limit must be at most" in assert_error(too_many, 422, "validation_error")["message"]
        assert_error(client.get(f"/v1/collections/{NAME}/duplicates", params={"limit": 0}), 422, "validation_error")
        assert_error(client.get(f"/v1/collections/{NAME}/duplicates", params={"neighbours": 0}), 422, "validation_error")
        assert_error(client.get("/v1/collections/no-such/duplicates"), 404, "collection_not_found")


def test_needs_an_api_key(photos: Photos) -> None:
    with photos.client() as client:
        assert_error(client.get(f"/v1/collections/{NAME}/duplicates"), 401)
        assert "/v1/collections/{name}/duplicates" in client.get("/openapi.json").json()["paths"]


def test_a_repeated_request_reuses_the_answer_until_the_collection_changes(photos: Photos, dupes: dict[str, int]) -> None:
    url = f"/v1/collections/{NAME}/duplicates"
    jobs = photos.server.app.state.semstore.duplicates
    with photos.client(photos.keys.admin) as client:
        first = client.get(url, params={"threshold": THRESHOLD}).json()
        kept = jobs._answers[NAME]
        assert client.get(url, params={"threshold": THRESHOLD}).json() == first
        assert jobs._answers[NAME] is kept  # the same answer object: no second join
        image = make_image(100, size=80).resize((60, 60), Image.LANCZOS)  # one more copy of p0
        added = client.post(f"/v1/collections/{NAME}/items", files=[("files", ("p0-small.png", encode(image, "PNG"), "image/png"))])
        assert added.status_code == 200, added.text
        new_id = added.json()["files"][0]["id"]
        try:
            again = client.get(url, params={"threshold": THRESHOLD}).json()
            assert jobs._answers[NAME] is not kept  # the revision moved: joined again
            group = next(g for g in again["groups"] if dupes["p0.png"] in g["ids"])
            assert new_id in group["ids"]
        finally:
            assert client.delete(f"/v1/collections/{NAME}/items/{new_id}").status_code in (200, 204)
