"""The search page in a real browser (Playwright driving Debian's Chromium, headless).

Needs ``apt-get install -y chromium`` (``/usr/bin/chromium``); Playwright's own browser
download is not used. Skipped, with the reason, when that binary is absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import COLLECTION, Photos, e2e_settings, encode, make_image, start_server
from tests.exif_photos import CAMERAS, exif_photos

EXIF_PHOTOS = exif_photos()

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's Chromium is not installed (apt-get install -y chromium)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _loaded_thumbnails(page) -> int:  # noqa: ANN001 - playwright Page
    return page.evaluate(
        "() => [...document.querySelectorAll('#results img.thumb')]"
        ".filter((img) => img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0).length"
    )


def _top_ids(page) -> list[str]:  # noqa: ANN001 - playwright Page
    """Ids of the results sharing the best score (as displayed)."""
    return page.evaluate(
        """() => {
            const cards = [...document.querySelectorAll('#results .card')];
            const score = (card) => card.querySelector('.score').textContent;
            return cards.filter((card) => score(card) === score(cards[0])).map((card) => card.dataset.id);
        }"""
    )


def _open_page(browser, photos: Photos, tmp_path: Path, *, width: int, height: int, collection: str = COLLECTION):  # noqa: ANN001, ANN202
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(photos.url + "/")
    page.fill("#api-key", photos.keys.reader)
    page.keyboard.press("Enter")  # submits the key form
    page.wait_for_selector(f"#collection option[value='{collection}']", state="attached")
    page.select_option("#collection", collection)
    return context, page, errors


def _search_by_image(page, photos: Photos, tmp_path: Path, name: str) -> None:  # noqa: ANN001 - playwright Page
    """Choose one of the collection's own images as the query and wait for the results."""
    query = tmp_path / "query.png"
    query.write_bytes(photos.files[name])
    page.set_input_files("#image-input", str(query))
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('results for image')")


def test_search_page_text_query_and_more_like_this(browser, photos: Photos, tmp_path: Path) -> None:  # noqa: ANN001
    context, page, errors = _open_page(browser, photos, tmp_path, width=1280, height=900)
    try:
        page.fill("#query", "a red circle")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelectorAll('#results .card').length === 24")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#results img.thumb')].every((img) => img.complete && img.naturalWidth > 0)"
        )
        assert _loaded_thumbnails(page) == 24
        assert "results for “a red circle”" in page.inner_text("#status")
        page.screenshot(path=str(tmp_path / "text-search.png"), full_page=True)

        # "More like this" on the third result: that item comes back on top (score ~1; items
        # with identical codes may tie with it).
        third = page.locator("#results .card").nth(2)
        wanted = third.get_attribute("data-id")
        third.get_by_role("button", name="More like").click()
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('results for items like')")
        page.wait_for_function("() => document.querySelectorAll('#results .card').length > 0")
        assert _top_ids(page) and wanted in _top_ids(page)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#results img.thumb')].every((img) => img.complete && img.naturalWidth > 0)"
        )
        page.screenshot(path=str(tmp_path / "more-like-this.png"), full_page=True)
        assert (tmp_path / "more-like-this.png").stat().st_size > 10_000

        # Keyboard only: focus lands on the results heading, Tab reaches a "More like this" button.
        assert page.evaluate("() => document.activeElement.id") == "results-heading"
        for _ in range(5):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.classList.contains('more-like-this')"):
                break
        focused = page.evaluate("() => document.activeElement.closest('.card').dataset.id")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.activeElement.id === 'results-heading'")
        page.wait_for_function("() => document.querySelectorAll('#results .card').length > 0")
        assert focused in _top_ids(page)
        assert errors == []
    finally:
        context.close()


def test_search_page_image_query_on_a_narrow_screen(browser, photos: Photos, tmp_path: Path) -> None:  # noqa: ANN001
    context, page, errors = _open_page(browser, photos, tmp_path, width=375, height=740)
    try:
        _search_by_image(page, photos, tmp_path, "img07.png")
        assert str(photos.ids["img07.png"]) in _top_ids(page)
        page.wait_for_function("() => document.querySelectorAll('#results img.thumb[src^=\"blob:\"]').length > 0")
        # Responsive: nothing wider than the screen.
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(tmp_path / "narrow.png"), full_page=False)
        assert errors == []
    finally:
        context.close()


def test_api_docs_render_with_every_outside_request_blocked(browser, photos: Photos, tmp_path: Path) -> None:  # noqa: ANN001
    # An air-gapped archive server: Swagger UI must come from the server itself, not a CDN.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    outside: list[str] = []

    def only_the_server(route) -> None:  # noqa: ANN001 - playwright Route
        if route.request.url.startswith(photos.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    try:
        page.route("**/*", only_the_server)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(photos.url + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
        assert "semstore" in page.inner_text(".swagger-ui .info .title")
        page.wait_for_selector(".opblock-summary-path", timeout=15_000)  # the routes, from /openapi.json
        assert page.locator(".opblock-summary-path").count() >= 10
        page.screenshot(path=str(tmp_path / "docs-offline.png"), full_page=False)
        assert (tmp_path / "docs-offline.png").stat().st_size > 10_000
        assert outside == [] and errors == []
    finally:
        context.close()


def _status(page) -> str:  # noqa: ANN001 - playwright Page
    return page.inner_text("#status")


def test_search_page_key_flow_tells_how_to_get_a_key_and_refuses_a_wrong_one(browser, photos: Photos, tmp_path: Path) -> None:  # noqa: ANN001
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(photos.url + "/")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('needs an API key')")
        assert page.is_visible("#key-how") and "semstore keys create NAME" in page.inner_text("#key-how")
        page.screenshot(path=str(tmp_path / "first-screen.png"))

        page.fill("#api-key", "ssk_this-is-not-a-key")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('refused')")
        assert page.get_attribute("#api-key", "placeholder") != "key saved for this tab"
        assert page.evaluate("() => sessionStorage.getItem('semstore.apiKey')") is None
        assert page.locator("#status.error").count() == 1 and page.locator("#collection option").count() == 0
        assert page.is_visible("#key-how")

        page.fill("#api-key", photos.keys.reader)
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('Key accepted')")
        assert page.get_attribute("#api-key", "placeholder") == "key saved for this tab"
        assert page.evaluate("() => sessionStorage.getItem('semstore.apiKey')") == photos.keys.reader
        page.wait_for_selector(f"#collection option[value='{COLLECTION}']", state="attached")
        assert not page.is_visible("#key-how")
        assert errors == []
    finally:
        context.close()


def test_search_page_asks_for_no_key_when_keys_are_disabled(browser, photos: Photos, tmp_path: Path) -> None:  # noqa: ANN001
    # A second server on the same database, started with SEMSTORE_API_KEYS_DISABLED=1 (loopback only).
    keyless = start_server(e2e_settings(photos.root, allowed_ingest_roots=[photos.root / "allowed"], api_keys_disabled=True))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(keyless.url + "/")
        page.wait_for_selector(f"#collection option[value='{COLLECTION}']", state="attached")
        assert not page.is_visible("#key-form") and not page.is_visible("#api-key")
        assert "API key" not in _status(page) and _status(page).startswith("Ready.")
        page.select_option("#collection", COLLECTION)
        page.fill("#query", "a red circle")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelectorAll('#results .card').length > 0")
        page.screenshot(path=str(tmp_path / "keys-disabled.png"))
    finally:
        context.close()
        keyless.stop()


def test_search_page_failed_search_clears_the_old_results(browser, photos: Photos, tmp_path: Path) -> None:  # noqa: ANN001
    context, page, errors = _open_page(browser, photos, tmp_path, width=1280, height=900)
    try:
        page.fill("#query", "a red circle")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelectorAll('#results .card').length === 24")
        # The next search fails on the server's side (a 503 in the API's error shape).
        page.route(
            "**/search",
            lambda route: route.fulfill(
                status=503, content_type="application/json",
                json={"error": {"code": "unavailable", "message": "the index is being rebuilt", "detail": None}},
            ),
        )  # fmt: skip
        page.fill("#query", "a blue square")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Search failed')")
        assert "the index is being rebuilt" in _status(page)
        assert page.locator("#results .card").count() == 0
        assert errors == []
    finally:
        context.close()


def test_search_page_shows_the_full_image_its_source_and_metadata(browser, photos: Photos, tmp_path: Path) -> None:  # noqa: ANN001
    context, page, errors = _open_page(browser, photos, tmp_path, width=1280, height=900)
    try:
        _search_by_image(page, photos, tmp_path, "img07.png")
        wanted = str(photos.ids["img07.png"])
        card = page.locator(f"#results .card[data-id='{wanted}']")
        card.get_by_role("button", name="Details of").click()
        page.wait_for_selector("#detail[open]")
        page.wait_for_function("() => { const img = document.querySelector('#detail-image'); return img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0; }")
        original = page.evaluate("() => [document.querySelector('#detail-image').naturalWidth, document.querySelector('#detail-image').naturalHeight]")
        assert original == [96, 96]  # the original file, not a thumbnail
        facts = page.evaluate(
            "() => Object.fromEntries([...document.querySelectorAll('#detail-facts dt')]"
            ".map((dt) => [dt.textContent, dt.nextElementSibling.textContent]))"
        )
        assert facts["source"].endswith("/img07.png") and facts["size"] == "96 × 96 px" and facts["item id"] == wanted
        assert facts["set"] == '"e2e"'  # the metadata given at upload
        assert page.get_attribute("#detail-open", "href").startswith("blob:") and page.is_visible("#detail-open")
        page.screenshot(path=str(tmp_path / "detail.png"))
        assert (tmp_path / "detail.png").stat().st_size > 10_000
        page.keyboard.press("Escape")
        page.wait_for_selector("#detail", state="hidden")
        card.get_by_role("button", name="Details of").click()
        page.click("#detail-more")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('results for items like')")
        assert wanted in _top_ids(page)
        assert errors == []
    finally:
        context.close()


def test_search_page_uploads_images_with_metadata(browser, photos: Photos, tmp_path: Path) -> None:  # noqa: ANN001
    files = []
    for index in (901, 902):
        path = tmp_path / f"page-upload-{index}.png"
        path.write_bytes(encode(make_image(index, size=80), "PNG"))
        files.append(str(path))
    context, page, errors = _open_page(browser, photos, tmp_path, width=1280, height=900)  # a read-only key
    try:
        page.click("#upload summary")
        page.set_input_files("#upload-input", files)
        page.fill("#upload-meta", '{"album": "from-the-page"}')
        page.click("#upload-button")
        page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Upload failed')")
        assert "--scope read-write" in _status(page)

        page.fill("#upload-meta", "[1, 2]")
        page.click("#upload-button")
        page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Upload not sent')")
        assert "JSON object" in _status(page)

        page.fill("#api-key", photos.keys.admin)
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('Key accepted')")
        page.select_option("#collection", COLLECTION)
        page.fill("#upload-meta", '{"album": "from-the-page"}')
        page.click("#upload-button")
        page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Uploaded')", timeout=60_000)
        assert "2 added, 0 already stored" in _status(page)
        page.screenshot(path=str(tmp_path / "uploaded.png"))
        assert errors == []
    finally:
        context.close()
    with photos.client(photos.keys.reader) as client:
        found = client.post(f"/v1/collections/{COLLECTION}/search", json={"text": "anything", "k": 5, "where": {"album": "from-the-page"}})
    assert found.status_code == 200, found.text
    assert sorted(hit["source_uri"].rsplit("/", 1)[-1] for hit in found.json()["hits"]) == [Path(f).name for f in files]


@pytest.fixture(scope="module")
def album(photos: Photos) -> dict[str, int]:
    """A second collection ``album`` (the photos collection's codec) of JPEGs with EXIF blocks."""
    with photos.client(photos.keys.admin) as client:
        codec = client.get(f"/v1/collections/{COLLECTION}").json()["codec_hash"]
        assert client.post("/v1/collections", json={"name": "album", "codec": codec}).status_code == 201
        ids: dict[str, int] = {}
        step = photos.settings.max_images_per_request
        for start in range(0, len(EXIF_PHOTOS), step):
            batch = EXIF_PHOTOS[start : start + step]
            response = client.post("/v1/collections/album/items", files=[("files", (p.name, p.data, "image/jpeg")) for p in batch])
            assert response.status_code == 200, response.text
            ids.update({entry["source"]: entry["id"] for entry in response.json()["files"]})
    return ids


def test_search_page_filters_by_date_and_camera_and_shows_exif(browser, photos: Photos, album: dict[str, int], tmp_path: Path) -> None:  # noqa: ANN001
    context, page, errors = _open_page(browser, photos, tmp_path, width=1280, height=900, collection="album")
    try:
        page.fill("#k", "50")  # (the e2e server caps k at 50; the album holds 37 photos)
        page.fill("#taken-from", "2023-03-01")
        page.fill("#taken-until", "2023-06-30")  # inclusive: up to 2023-07-01 00:00
        page.fill("#camera", "X100V")
        page.fill("#query", "a photo")
        page.click("#search-button")
        page.wait_for_function("() => /results for|failed/.test(document.querySelector('#status').textContent)")
        assert "results for" in _status(page), _status(page)
        shown = {int(i) for i in page.eval_on_selector_all("#results .card", "cards => cards.map((c) => c.dataset.id)")}
        wanted = {album[p.name] for p in EXIF_PHOTOS
                  if p.taken is not None and datetime(2023, 3, 1) <= p.taken < datetime(2023, 7, 1) and p.camera == CAMERAS[0]}  # fmt: skip
        assert wanted and shown == wanted, (shown, wanted)
        assert "photos from 2023-03-01, until 2023-06-30, camera X100V" in _status(page)
        captions = page.eval_on_selector_all("#results .card .exif", "spans => spans.map((s) => s.textContent)")
        assert len(captions) == len(wanted) and all("Fujifilm X100V" in c and c.startswith("2023-0") for c in captions)
        page.screenshot(path=str(tmp_path / "date-filter.png"), full_page=True)
        assert (tmp_path / "date-filter.png").stat().st_size > 10_000
        page.click("#clear-filters")
        page.click("#search-button")
        page.wait_for_function("() => !document.querySelector('#status').textContent.includes('photos from')")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('results for')")
        assert len(page.query_selector_all("#results .card")) == len(EXIF_PHOTOS)  # every photo again
        assert errors == []
    finally:
        context.close()


def test_search_page_shows_near_duplicate_groups_side_by_side(browser, photos: Photos, tmp_path: Path) -> None:  # noqa: ANN001
    from tests.e2e.test_duplicates_api import THRESHOLD, _copies

    files = {name: data for i in range(4) for name, data in _copies(i).items()}
    with photos.client(photos.keys.admin) as client:
        assert client.post("/v1/collections", json={"name": "page-dupes"}).status_code == 201
        response = client.post(
            "/v1/collections/page-dupes/items",
            files=[("files", (n, d, "image/jpeg" if n.endswith("jpg") else "image/png")) for n, d in files.items()],
        )
        assert response.status_code == 200, response.text
        ids = {entry["source"]: entry["id"] for entry in response.json()["files"]}
    context, page, errors = _open_page(browser, photos, tmp_path, width=1280, height=900, collection="page-dupes")
    try:
        page.click("#duplicates summary")
        page.fill("#duplicates-threshold", "2")
        page.click("#duplicates-button")
        assert "at most 1" in _status(page)  # refused in the page, nothing sent

        page.fill("#duplicates-threshold", str(THRESHOLD))
        page.click("#duplicates-button")
        page.wait_for_function("() => /group\\(s\\) of near-duplicates|failed/.test(document.querySelector('#status').textContent)")
        assert "4 group(s) of near-duplicates" in _status(page), _status(page)
        groups = page.eval_on_selector_all("#duplicate-groups .group", "gs => gs.map((g) => g.dataset.ids.split(',').map(Number))")
        expected = sorted(sorted(ids[name] for name in files if name.startswith(f"p{i}")) for i in range(4))
        assert sorted(groups) == expected  # each picture with its three copies, side by side
        page.wait_for_function(
            "() => [...document.querySelectorAll('#duplicate-groups img.thumb')]"
            ".every((img) => img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0)"
        )
        page.screenshot(path=str(tmp_path / "duplicates.png"), full_page=True)
        assert (tmp_path / "duplicates.png").stat().st_size > 10_000
        assert errors == []
    finally:
        context.close()
        with photos.client(photos.keys.admin) as client:
            client.delete("/v1/collections/page-dupes")
