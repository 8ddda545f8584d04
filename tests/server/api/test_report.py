"""The report page ``/checks/{id}``: every verdict label, escaping, security headers, a real browser.

Checks are written to the database directly with representative verdicts (no analysis runs),
so each label's page is exercised exactly.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from server.db import repo
from server.keys import sessions_key
from server.report.html import CONTENT_SECURITY_POLICY
from tests.helpers.verdicts import LABELS, make_check

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "artifacts" / "report"
CHROMIUM = "/usr/lib/chromium/chromium"


@pytest.mark.parametrize("label", LABELS)
async def test_report_page_renders_each_label(api, label: str) -> None:
    check_id = await make_check(api.app[sessions_key], label)
    resp = await api.get(f"/checks/{check_id}")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    page = await resp.text()
    assert f'class="verdict {label}"' in page
    assert '<svg class="chart"' in page and "<polyline" in page
    assert 'id="model"' in page and "test-tiny" in page and "Demo model" in page
    assert 'id="timings"' in page and "5.800 s" in page
    assert "<script" not in page
    assert page.count('<image href="data:image/jpeg;base64,') >= 1  # face thumbnails
    assert 'stroke="#ffd400"' in page  # their boxes
    if label == "tampered":
        assert 'id="purified"' in page
        assert page.count('alt="original face crop') == 4 and page.count('alt="purified face crop') == 4
        assert "After purification the content scores manipulated" in page
    else:
        assert 'id="purified"' not in page
    if label == "inconclusive":
        assert "no usable face" in page


async def test_unknown_and_malformed_ids_get_an_html_404(api) -> None:
    for check_id in (uuid.uuid4().hex, "not-an-id", "%3Cb%3Ex"):
        resp = await api.get(f"/checks/{check_id}")
        assert resp.status == 404
        assert resp.content_type == "text/html"
        assert "<b>x" not in await resp.text()


async def test_text_from_the_database_is_escaped(api) -> None:
    check_id = await make_check(
        api.app[sessions_key], "authentic", filename='<script>alert(1)</script>"x.mp4', thumbs=False
    )
    page = await (await api.get(f"/checks/{check_id}")).text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;x.mp4" in page
    assert "No face thumbnails were kept" in page


async def test_running_check_reloads_without_javascript(api) -> None:
    sessions = api.app[sessions_key]
    check_id = uuid.uuid4().hex
    await repo.create_check(
        sessions, id=check_id, source="upload", model_id="m", model_version="1", status="running"
    )
    resp = await api.get(f"/checks/{check_id}")
    page = await resp.text()
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-cache"
    assert '<meta http-equiv="refresh" content="3">' in page
    assert "still running" in page
    await repo.fail_check(sessions, check_id, "undecodable_media", "the file is <not> a video")
    page = await (await api.get(f"/checks/{check_id}")).text()
    assert 'class="verdict failed"' in page and "the file is &lt;not&gt; a video" in page


@pytest.mark.browser
@pytest.mark.slow
async def test_report_pages_in_headless_chromium(aiohttp_server, settings, request) -> None:
    """Each label's page in a real browser with JavaScript off; screenshots go to artifacts/report/."""
    if request.node.callspec.params.get("database_url") == "postgres":
        pytest.skip("one database is enough for the browser pass")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM}")
    playwright = pytest.importorskip("playwright.async_api")
    from server.app import create_app

    server = await aiohttp_server(create_app(settings))
    ids = {label: await make_check(server.app[sessions_key], label) for label in LABELS}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with playwright.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--disable-gpu", "--no-first-run"]
        )
        try:
            context = await browser.new_context(
                java_script_enabled=False, viewport={"width": 1024, "height": 800}
            )
            page = await context.new_page()
            blocked: list[str] = []
            page.on(
                "console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None
            )
            for label, check_id in ids.items():
                resp = await page.goto(str(server.make_url(f"/checks/{check_id}")))
                assert resp is not None and resp.status == 200
                assert (await page.text_content(".verdict .label")).strip().lower() == label
                chart = await page.query_selector("svg.chart")
                box = await chart.bounding_box()
                assert box is not None and box["width"] > 600 and box["height"] > 150
                faces = await page.query_selector_all("#faces figure")
                assert faces, "face thumbnails are shown"
                if label == "tampered":
                    assert len(await page.query_selector_all("#purified img")) == 8
                await page.screenshot(path=str(ARTIFACTS / f"{label}.png"), full_page=True)
            assert not blocked, blocked
        finally:
            await browser.close()
    for label in LABELS:
        assert (ARTIFACTS / f"{label}.png").stat().st_size > 10_000
