"""The Projects tab in headless Chromium: analyse a server folder, watch the progress (also after reopening the
page), filter the detections and download the combined Raven table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from app_runner import RunningApp
from archive_fixture import make_archive

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
    pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does this)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_archive(root / "season2024")
    with RunningApp("--no-warmup", "--data-root", str(root), "--projects-dir",
                    str(tmp_path_factory.mktemp("projects")), "--project-workers", "1",
                    log_path=tmp_path_factory.mktemp("e2e") / "app.log") as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


def _open_projects(context, url):
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_role("tab", name="Projects").click()
    page.locator("#prj-start").wait_for()
    return page


def _choose(page, selector: str, text: str) -> None:
    box = page.locator(f"{selector} input")
    box.click()
    box.fill(text)
    box.press("Enter")


def test_analyse_folder_progress_filter_and_download_raven(app, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page = _open_projects(context, app.url)
    _choose(page, "#prj-name", "season")
    _choose(page, "#prj-folder", "season2024/siteA")
    page.click("#prj-start")
    try:
        page.locator("#prj-started").get_by_text("started").wait_for()
    except Exception:
        page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
        raise
    page.locator('#prj-progress-box[data-state="running"]').wait_for(timeout=120_000)
    # close the page while it runs; a new page finds the job again and shows its progress
    page.close()
    page = _open_projects(context, app.url)
    page.locator("#prj-progress-box").wait_for()
    page.locator('#prj-progress-box[data-state="done"]').wait_for(timeout=400_000)
    assert "10 file(s) analysed" in page.locator("#prj-progress-text").inner_text()
    # filters: Oxford in April, German names
    page.locator("#prj-lat").get_by_role("textbox").fill("51.75")
    page.locator("#prj-lon").get_by_role("textbox").fill("-1.26")
    page.locator("#prj-week").get_by_role("textbox").fill("15")
    _choose(page, "#prj-language", "German (de)")
    page.click("#prj-browse")
    page.locator("#prj-table").get_by_text("Kohlmeise").filter(visible=True).first.wait_for()
    page.locator("#prj-heatmap .js-plotly-plot").wait_for()
    page.locator("#prj-hours .js-plotly-plot").wait_for()
    assert "detection(s)" in page.locator("#prj-summary").inner_text()
    page.click("#prj-export")
    link = page.locator('#prj-downloads td.filename[aria-label="combined.selection.table.txt"]')
    link.wait_for()
    with page.expect_download() as download:
        row = page.locator("#prj-downloads tr", has=page.locator('td.filename[aria-label="combined.selection.table.txt"]'))
        row.locator("a").first.click()
    saved = tmp_path / "combined.selection.table.txt"
    download.value.save_as(saved)
    table = pd.read_csv(saved, sep="\t")
    assert "Kohlmeise" in set(table["Common Name"]) and "File Offset (s)" in table.columns
    page.wait_for_timeout(500)
    from app_runner import REPO

    (REPO / "docs" / "screenshots").mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(REPO / "docs" / "screenshots" / "projects.png"), full_page=True)
    context.close()
