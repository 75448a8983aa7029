"""The "Find & train" tab on a real BirdNET project: through gradio_client, and in headless Chromium."""

from __future__ import annotations

import json
import re
import contextlib
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
GREAT_TIT = "siteA/20240515_063000.wav"
ZEBRA = "siteA/20240517_090000.wav"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def projects_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("similar_tab")
    make_tiled_project_audio(base / "rec")
    analyse_project([base / "rec"], base / "projects" / "tiled", RunSettings("birdnet_v2_4"), engine="inline")
    return base / "projects"


@pytest.fixture(scope="module")
def app(projects_dir, tmp_path_factory):
    with RunningApp("--no-warmup", "--projects-dir", str(projects_dir), "--project-workers", "1",
                    log_path=tmp_path_factory.mktemp("app") / "app.log") as running:
        yield running


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
    metrics, ranked, next_clips, saved, rank_by = client.predict("tiled", "", 10, api_name="/similar_train")
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


@contextlib.contextmanager
def tab_with_project(app, width: int = 1440):
    """Headless Chromium on the Find & train tab with the project 'tiled' chosen."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does this)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": width, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(app.url)
        page.get_by_role("tab", name="Find & train").click()
        page.locator("#sim-project input").click()
        page.get_by_role("option", name="tiled").click()
        try:
            yield page
        finally:
            browser.close()


@pytest.mark.e2e
def test_tab_in_chromium_search_label_three_train(app, projects_dir):
    with tab_with_project(app, width=1400) as page:
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


def _table(frame: pd.DataFrame) -> dict:
    return frame.to_dict("split") | {"headers": list(frame.columns)}


def _map_points(figure: dict) -> pd.DataFrame:
    """(row, file) of every point of the map's plotly figure."""
    data = json.loads(figure["plot"])["data"]
    return pd.DataFrame([(c[0], c[1]) for trace in data for c in trace["customdata"]], columns=["row", "file"])


def _rows(points: pd.DataFrame, file: str, n: int = 99) -> str:
    return ",".join(str(r) for r in points[points.file == file].row.head(n)) + "|1"


def test_map_select_label_search_and_a_two_class_classifier_through_the_api(app):
    client = Client(app.url, verbose=False)
    client.predict("tiled", api_name="/similar_project")
    message, figure = client.predict("tiled", [], "", "", "PCA", "species", 20000, api_name="/similar_map")
    points = _map_points(figure)
    assert "all 29 windows" in message and sorted(points.row) == list(range(29))
    assert points.file.value_counts()[FINCH] == 8
    # a lasso around the finch windows fills the results table, source "map"
    message, items, selected = client.predict("tiled", _rows(points, FINCH), api_name="/similar_map_select")
    items = _frame(items)
    assert "8 window(s) selected on the map" in message and (items.file == FINCH).all() and selected == 0
    message, items, labels, _figure = client.predict("tiled", "bf2", "positive", _table(items), "species",
                                                     api_name="/similar_map_label")
    labels = _frame(labels)
    assert "8 selected window(s) marked positive for 'bf2'" in message and (_frame(items).label == "positive").all()
    assert len(labels[(labels.class_name == "bf2") & (labels.source == "map")]) == 8
    # search from the selection: the mean of its embeddings
    message, found, _ = client.predict("tiled", 10, [], "", "", api_name="/similar_map_search")
    found = _frame(found)
    assert "most similar to the 8 selected on the map" in message and (found.file.head(6) == FINCH).all()
    # a click on a point not listed puts it at the top of the results, selected
    tit_row = int(points[points.file == GREAT_TIT].row.iloc[0])
    clicked, selected = client.predict("tiled", f"{tit_row}|2", _table(found), api_name="/similar_map_click")
    clicked = _frame(clicked)
    assert clicked.file[0] == GREAT_TIT and len(clicked) == 11 and selected == 0
    # a second class and negatives, then a classifier of both classes ranks every class
    for file, n, class_name, verdict in ((GREAT_TIT, 5, "gt2", "positive"), (ZEBRA, 4, "bf2", "negative")):
        _, items, _ = client.predict("tiled", _rows(points, file, n), api_name="/similar_map_select")
        client.predict("tiled", class_name, verdict, items, "label", api_name="/similar_map_label")
    message, figure = client.predict("tiled", [], "", "", "PCA", "label", 20000, api_name="/similar_map")
    names = {t["name"] for t in json.loads(figure["plot"])["data"]}
    assert {"positive: bf2", "positive: gt2", "negative: bf2"} <= names
    metrics, ranked, _next, _saved, rank_by = client.predict("tiled", "bf2, gt2", 0, api_name="/similar_train")
    ranked = _frame(ranked)
    assert "**bf2**" in metrics and "**gt2**" in metrics
    assert set(ranked.class_name.head(12)) == {"bf2", "gt2"}
    head = ranked.head(12)
    assert (head[head.file == FINCH].class_name == "bf2").all() and (head[head.file == GREAT_TIT].class_name == "gt2").all()
    ranked_gt, _next = client.predict("tiled", "gt2", api_name="/similar_rank")
    ranked_gt = _frame(ranked_gt)
    assert (ranked_gt.class_name == "gt2").all() and ranked_gt.file.head(8).isin([GREAT_TIT, "siteB/20240516_070000.wav"]).all()
    with pytest.raises(Exception, match="no window of the project matches"):
        client.predict("tiled", [], "2030-01-01", "", "PCA", "species", 20000, api_name="/similar_map")


@pytest.mark.e2e
def test_map_in_chromium_lasso_mark_and_click_to_listen(app, projects_dir):
    with tab_with_project(app) as page:
        page.get_by_text("29 windows").first.wait_for()
        page.get_by_text("Map of the project's windows").first.click()  # open the section
        page.click("#sim-map-draw")
        page.get_by_text("all 29 windows").first.wait_for()
        page.locator("#sim-map .scatterlayer .point").first.wait_for()
        page.locator("#sim-map").scroll_into_view_if_needed()
        # a real lasso around the whole plot area (the map's drag mode is lasso)
        area = page.locator("#sim-map .nsewdrag").first.bounding_box()
        x0, y0, x1, y1 = area["x"] + 4, area["y"] + 4, area["x"] + area["width"] - 4, area["y"] + area["height"] - 4
        corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0 + 4)]
        page.mouse.move(*corners[0])
        page.mouse.down()
        for (ax, ay), (bx, by) in zip(corners, corners[1:]):
            for i in range(1, 9):
                page.mouse.move(ax + (bx - ax) * i / 8, ay + (by - ay) * i / 8)
        page.mouse.up()
        page.get_by_text("29 window(s) selected on the map").wait_for()
        page.locator("#sim-items").get_by_text(re.compile(r"^site[AB]/2024")).locator("visible=true").first.wait_for()
        player = page.locator("#sim-player a.download-link")
        player.wait_for()
        first_clip = player.get_attribute("href")
        page.locator("#sim-class textarea, #sim-class input").first.fill("mapcall")
        page.click("#sim-positive")
        page.get_by_text("#0 marked positive for 'mapcall'").wait_for()
        # click a point: hover it (plotly finds the point under the mouse), then press
        page.locator("#sim-map .main-svg").first.scroll_into_view_if_needed()  # the verdict click scrolled down
        point = page.locator("#sim-map .scatterlayer .point").nth(12).bounding_box()
        cx, cy = point["x"] + point["width"] / 2, point["y"] + point["height"] / 2
        page.mouse.move(cx - 2, cy)
        page.mouse.move(cx, cy)
        page.locator("#sim-map .hoverlayer .hovertext").wait_for()
        page.mouse.down()
        page.mouse.up()
        page.wait_for_function("(before) => { const a = document.querySelector('#sim-player a.download-link'); "
                               "return a && a.href !== before; }", arg=first_clip)
        assert page.locator(".toast-body").count() == 0  # no error toast on the way
        page.screenshot(path=str(projects_dir / "find_and_train_map.png"), full_page=True)
