"""The playground page at /, driven in a real headless Chromium (Debian's, by Playwright) against the
session's server: an image is picked, the question asked, the four stages and the trace appear."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from helpers import API_KEY, SMALL, STAGES, shapes_image
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# What a probe of these machines found Chromium needs: no sandbox as root, no GPU, and none of its
# background connections (the network is closed to them).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_the_playground_shows_each_stage_and_the_trace(server, tmp_path):
    if not shutil.which(CHROMIUM):
        pytest.fail("Debian's chromium is missing: `make tools` (or apt-get install chromium) installs it")
    image = tmp_path / "shapes.png"
    shapes_image().save(image)
    # PLAYGROUND_SCREENSHOT=docs/playground.png keeps the picture (docs/ has one).
    screenshot = Path(os.environ.get("PLAYGROUND_SCREENSHOT", tmp_path / "playground.png"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1100})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server["base"] + "/")
            page.fill("#key", API_KEY)
            page.set_input_files("#file", str(image))
            expect(page.locator("#drop img")).to_be_visible()
            page.select_option("#strategy", "stage")
            page.fill("#beam", "3")
            page.fill("#per-stage", "12")
            page.click("#go")
            expect(page.locator("#status")).to_contain_text("done in", timeout=120_000)
            for name in STAGES:
                box = page.locator(f"#stage-{name}")
                expect(box).to_have_class("stage decided")
                assert box.locator("pre").inner_text().strip(), f"stage {name} is empty"
            page.click("#trace summary")
            for name in STAGES:
                rows = page.locator(f'#trace table.candidates[data-stage="{name}"] tr')
                expect(rows).to_have_count(4)  # a header and the three candidates
            assert page.locator("#trace tr.winner").count() == len(STAGES)
            assert page.locator("#trace table.matches, #trace p.muted").count() == len(STAGES)
            page.screenshot(path=str(screenshot), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000


def test_the_playground_is_one_offline_page(server):
    page = httpx.get(server["base"] + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # No external assets: nothing is loaded from another origin.
    assert "http://" not in page.text and "https://" not in page.text and "<link" not in page.text


@pytest.mark.asyncio(loop_scope="session")
async def test_no_playground_turns_it_off(engine):
    from server.app import create_app

    app = create_app(engine, replace(SMALL, playground=False))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/")).status_code == 404
        assert (await client.get("/health")).status_code == 200
