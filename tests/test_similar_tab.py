"""The "Find & train" tab on a real BirdNET project: through gradio_client, and in headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from app_runner import RunningApp
from gradio_client import Client, handle_file
from similar_fixture import make_tiled_project_audio

from rl_core.custom_classifier import CustomClassifier
from rl_core.project import RunSettings, analyse_project

pytestmark = pytest.mark.slow

FINCH = "siteB/20240516_080000.wav"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def projects_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("similar_tab")
    make_tiled_project_audio(base / "rec")
    analyse_project([base / "rec"], base / "projects" / "tiled", RunSettings("birdnet_v2_4"), engine="inline")
    return base / "projects"


@pytest.fixture(scope="module")
def app(projects_dir, tmp_path_factory):
    running = RunningApp("--no-warmup", "--projects-dir", str(projects_dir), "--project-workers", "1",
                         log_path=tmp_path_factory.mktemp("app") / "app.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def _frame(value) -> pd.DataFrame:
    return pd.DataFrame(value["data"], columns=value["headers"])


def test_find_label_train_save_through_the_api(app, projects_dir, great_tits, tmp_path):
    client = Client(app.url, verbose=False)
    overview, *_ = client.predict("tiled", api_name="/similar_project")
    assert "29 windows" in overview
    message, items, selected = client.predict(
        "tiled", None, FINCH, 0, 3, 10, [], "", "", api_name="/similar_search")
    items = _frame(items)
    assert len(items) == 10 and items.file[0] == FINCH and selected == 0 and "most similar" in message
    assert items.score.is_monotonic_decreasing
    player, image, caption = client.predict(items.to_dict("split") | {"headers": list(items.columns)}, 1,
                                            api_name="/similar_show")
    assert Path(player).suffix == ".wav" and Path(image).suffix == ".png" and "#1" in caption
    table = items.to_dict("split") | {"headers": list(items.columns)}
    for i in range(4):
        verdict = "positive" if items.file[i] == FINCH else "negative"
        message, table, labels, selected = client.predict("tiled", table, i, "bf",
                                                          api_name=f"/similar_mark_{verdict}")
    assert "marked" in message and len(_frame(labels)) == 4
    _, tits, _ = client.predict("tiled", None, "siteA/20240515_063000.wav", 0, 6, 3, [], "", "",
                                   api_name="/similar_search")
    assert set(_frame(tits).file) <= {"siteA/20240515_063000.wav", "siteB/20240516_070000.wav"}
    for i in (0, 1):  # two great-tit windows as negatives
        client.predict("tiled", tits, i, "bf", api_name="/similar_mark_negative")
    metrics, ranked, next_clips, saved = client.predict("tiled", "", 10, api_name="/similar_train")
    ranked = _frame(ranked)
    assert "bf" in metrics and "average precision" in metrics
    assert (ranked.file.head(6) == FINCH).all() and ranked.score.is_monotonic_decreasing
    assert len(_frame(next_clips)) == 10
    assert sorted(Path(p).suffix for p in saved) == [".safetensors", ".yaml"]
    for path in saved:  # the client downloads each file into its own folder
        shutil.copy(path, tmp_path)
    classifier = CustomClassifier.load(tmp_path / "bf.safetensors")
    assert classifier.classes == ["bf"] and classifier.card.backbone == "birdnet_v2_4"
    # bad inputs come back as one readable line
    with pytest.raises(Exception, match="shorter than one 3-s window"):
        client.predict("tiled", [handle_file(str(great_tits[0].path))], None, 0, 3, 10, [], "", "",
                       api_name="/similar_search")
    with pytest.raises(Exception, match="choose a project"):
        client.predict("", None, FINCH, 0, 3, 10, [], "", "", api_name="/similar_search")


@pytest.mark.e2e
def test_tab_in_chromium_search_label_three_train(app, projects_dir):
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does this)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(app.url)
        page.get_by_role("tab", name="Find & train").click()
        page.locator("#sim-project input").click()
        page.get_by_role("option", name="tiled").click()
        try:
            page.get_by_text("29 windows").wait_for()
        except Exception:
            page.screenshot(path="/tmp/hs/fail.png", full_page=True)
            raise
        page.locator("#sim-file input").click()
        page.get_by_role("option", name=FINCH).click()
        page.click("#sim-search")
        page.get_by_text("window(s) most similar").wait_for()
        page.locator("#sim-spec img").wait_for()  # the selected result's spectrogram and player
        page.locator("#sim-player audio").first.wait_for(state="attached")
        page.locator("#sim-class textarea, #sim-class input").first.fill("bf")
        page.evaluate("document.activeElement.blur()")  # no text field has the focus, so the keys label
        for key in ("p", "p", "n"):  # keyboard, typed at once: result 0, 1 positive, 2 negative (keys wait their turn)
            page.keyboard.press(key)
        page.get_by_text("#2 marked negative").wait_for()
        page.click("#sim-positive")  # and a button: result 3
        page.get_by_text("#3 marked positive for 'bf'").wait_for()
        assert page.locator(".toast-body").count() == 0  # no error toast on the way
        page.locator("#sim-randneg input").fill("10")
        page.click("#sim-train")
        page.get_by_text("Trained a linear classifier").wait_for(timeout=120_000)
        assert page.locator("#sim-items").get_by_text(FINCH).count() >= 1
        page.screenshot(path=str(projects_dir / "find_and_train.png"), full_page=True)
        browser.close()
