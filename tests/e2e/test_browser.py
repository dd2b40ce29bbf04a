"""The search page in a real browser (Playwright driving Debian's Chromium, headless).

Needs ``apt-get install -y chromium`` (``/usr/bin/chromium``); Playwright's own browser
download is not used. Skipped, with the reason, when that binary is absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import COLLECTION, Photos

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


def _open_page(browser, photos: Photos, tmp_path: Path, *, width: int, height: int):  # noqa: ANN001, ANN202
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(photos.url + "/")
    page.fill("#api-key", photos.keys.reader)
    page.keyboard.press("Enter")  # submits the key form
    page.wait_for_selector(f"#collection option[value='{COLLECTION}']", state="attached")
    page.select_option("#collection", COLLECTION)
    return context, page, errors


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
        query = tmp_path / "query.png"
        query.write_bytes(photos.files["img07.png"])
        page.set_input_files("#image-input", str(query))
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('results for image')")
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
