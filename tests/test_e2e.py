"""End to end in headless Chromium (Playwright): what a user does in each tab, with screenshots for the docs.

Needs Debian's chromium at /usr/bin/chromium (installed by .ci/run); skipped with a reason when it is absent.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from app_runner import REPO, RunningApp

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
SHOTS = REPO / "docs" / "screenshots"

if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
    pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does this)",
                allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with RunningApp("--preload", "birdnet_v2_4", log_path=tmp_path_factory.mktemp("e2e") / "app.log") as running:
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


@pytest.fixture
def page(app, browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app.url)
    page.wait_for_selector("#inf-run")
    yield page
    context.close()


def upload(page, selector: str, paths: list[Path]) -> None:
    with page.expect_file_chooser() as chooser:
        page.locator(selector).click()
    chooser.value.set_files([str(p) for p in paths])
    for p in paths:  # the upload box lists each file (stem and extension in two spans) once it is uploaded
        page.locator(f'{selector} td.filename[aria-label="{p.name}"]').wait_for()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def cell(page, table: str, row: int, col: int):
    return page.locator(f'{table} [data-testid="cell-{row}-{col}"]')


def column(page, table: str, col: int) -> list[str]:
    return [t.strip() for t in page.locator(f'{table} [data-testid^="cell-"][data-col="{col}"]').all_inner_texts()]


def figure_title(page) -> str:
    return page.locator("#inf-view .gtitle").first.text_content()


def analyse_example(page, name: str = "storm_petrel_XC46092.wav") -> None:
    page.locator("#inf-example input").click()
    page.get_by_role("option", name=name).click()
    page.click("#inf-run")
    page.locator("#inf-status").get_by_text("Analysed").wait_for(timeout=120_000)
    page.locator("#inf-view .js-plotly-plot").wait_for()


def set_text(page, selector: str, value: str) -> None:
    box = page.locator(f"{selector} input, {selector} textarea").first
    box.fill(value)
    box.press("Enter")


def test_inference_shows_great_tit(page, great_tits, storm_petrels):
    upload(page, "#inf-files", [great_tits[0].path, storm_petrels[0]])
    page.click("#inf-run")
    page.locator("#inf-status").get_by_text("Analysed 2 file(s)").wait_for(timeout=120_000)
    assert column(page, "#inf-species", 2)[0] == "Parus major" and column(page, "#inf-species", 1)[0] == "Great Tit"
    assert page.locator("#inf-summary").get_by_text("Hydrobates pelagicus", exact=False).count() >= 1
    page.click("#inf-downloads-run")
    for name in ("predictions.csv", f"{storm_petrels[0].stem}.selections.txt", f"{storm_petrels[0].stem}.labels.txt",
                 "embeddings.npz", "settings.json"):
        page.locator(f'#inf-downloads td.filename[aria-label="{name}"]').wait_for()
    pick = page.locator("#inf-pick input")
    pick.click()
    page.get_by_role("option", name=storm_petrels[0].name).click()
    page.wait_for_function("() => document.querySelector('#inf-view .gtitle')?.textContent.includes('XC46092')")
    assert column(page, "#inf-species", 2)[0] == "Hydrobates pelagicus"
    # one progress bar per run: no panel but the status line shows a progress tracker
    shot(page, "inference")


def test_location_and_week_move_a_species_to_the_removed_list(page):
    analyse_example(page)
    assert "Hydrobates pelagicus" in column(page, "#inf-species", 2)
    set_text(page, "#inf-lat", "42.45")
    set_text(page, "#inf-lon", "-76.48")
    set_text(page, "#inf-date", "2026-05-12")
    page.wait_for_function(
        "() => !document.querySelector('#inf-species').innerText.includes('Hydrobates pelagicus')")
    box = page.locator("#inf-removed-box")
    box.get_by_text(re.compile(r"Removed by the location filter: \d+ species")).click()
    assert "Hydrobates pelagicus" in column(page, "#inf-removed", 1)


def test_raising_minimum_confidence_removes_weak_rows(page):
    analyse_example(page)
    assert len(column(page, "#inf-species", 2)) == 5  # two strong and three faded rows
    page.locator("#inf-below").get_by_text("hide them").click()
    page.wait_for_function("() => document.querySelectorAll('#inf-species [data-col=\"2\"][data-testid^=cell]')"
                           ".length === 2")
    set_text(page, "#inf-min-conf", "0.5")
    page.wait_for_function("() => document.querySelectorAll('#inf-species [data-col=\"2\"][data-testid^=cell]')"
                           ".length === 1")
    assert column(page, "#inf-species", 2) == ["Hydrobates pelagicus"]


def test_clips_of_the_ticked_detections(page, tmp_path):
    """Issue 12 #2: untick detections in the clips table; the zip holds the clips of the ticked ones only."""
    import zipfile

    analyse_example(page)
    page.locator("#inf-clip-box").get_by_text("Clips: choose the detections to export").click()
    cell(page, "#inf-clip-rows", 0, 1).wait_for()
    species = column(page, "#inf-clip-rows", 1)
    starts = column(page, "#inf-clip-rows", 2)
    assert len(species) == 6 and species[0].startswith("European Storm-Petrel")  # five petrel windows, one rail
    rail = next(i for i, name in enumerate(species) if "Laterallus jamaicensis" in name)
    for row in (0, rail):
        box = cell(page, "#inf-clip-rows", row, 0).locator("input[type=checkbox]")
        box.click()
        page.wait_for_function("(box) => !box.checked", arg=box.element_handle())
    page.click("#inf-clips-run")
    link = page.locator("#inf-clips a").first
    link.wait_for()
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / "clips.zip"
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        wavs = sorted(n for n in archive.namelist() if n.endswith(".wav"))
    kept = [float(s) for i, s in enumerate(starts) if i not in (0, rail)]
    assert len(wavs) == 4 and not any("Laterallus" in w for w in wavs)
    assert sorted(float(w.rsplit("_", 1)[1][:-5]) for w in wavs) == sorted(kept)


def test_clicking_a_detection_plays_its_window(page):
    analyse_example(page)
    assert "0.0-14.0 s" in figure_title(page)
    before = page.locator("#inf-audio").inner_text()
    cell(page, "#inf-species", 1, 1).click()  # Black Rail, best at 9 s
    page.wait_for_function("() => document.querySelector('#inf-view .gtitle').textContent.includes('8.0-13.0 s')")
    page.locator("#inf-audio").get_by_text("8.0-13.0 s").wait_for()
    assert page.locator("#inf-audio").inner_text() != before
    # a timeline cell: the heatmap's first row, at about 4 s
    heatmap = page.locator("#inf-view .nsewdrag").last  # the timeline's plot area (the spectrogram's is first)
    heatmap.click(position={"x": heatmap.bounding_box()["width"] * 0.1, "y": 5}, force=True)  # 8.5 s, top row
    page.wait_for_function("() => document.querySelector('#inf-view .gtitle').textContent.includes('5.0-10.0 s')")
    page.locator("#inf-audio").get_by_text("5.0-10.0 s").wait_for()


def test_five_minute_file_spectrogram_moves_to_minute_four(page, great_tits, tmp_path):
    import numpy as np
    import soundfile as sf

    song, sr = sf.read(great_tits[0].path, dtype="float32")
    audio = np.random.default_rng(0).normal(0, 0.002, 300 * sr).astype(np.float32)
    for start in range(0, 298 * sr, 20 * sr):
        audio[start:start + len(song)] += song
    path = tmp_path / "five_minutes.wav"
    sf.write(path, audio, sr, subtype="PCM_16")
    upload(page, "#inf-files", [path])
    page.click("#inf-run")
    page.locator("#inf-status").get_by_text("Analysed 1 file(s)").wait_for(timeout=180_000)
    page.wait_for_function("() => document.querySelector('#inf-view .gtitle')?.textContent.includes('of 300.0 s')")
    set_text(page, "#inf-position", "240")
    page.wait_for_function("() => document.querySelector('#inf-view .gtitle').textContent.includes('240.0-270.0 s')")
    page.locator("#inf-audio").get_by_text("240.0-270.0 s").wait_for()
    ticks = page.locator("#inf-view .x2tick text, #inf-view .xtick text").all_text_contents()
    assert "250" in ticks and "260" in ticks  # round times on the shared axis


def test_unavailable_model_gives_one_clear_message(page):
    page.locator("#inf-model input").click()
    page.get_by_role("option", name=re.compile(r"^esp_aves2_sl_beats_all")).click()
    page.locator("#inf-example input").click()
    page.get_by_role("option", name="great_tit_SW83.wav").click()
    page.click("#inf-run")
    status = page.locator("#inf-status")
    status.get_by_text("cannot be downloaded now").wait_for(timeout=30_000)
    text = status.inner_text()
    assert "://" not in text and "/root" not in text and "/home" not in text
    assert page.get_by_text("Error", exact=True).count() == 0  # no red badges on the panels


def test_german_common_names(page):
    analyse_example(page)
    page.locator("#inf-language input").click()
    page.get_by_role("option", name="German").click()
    page.wait_for_function("() => document.querySelector('#inf-species').innerText.includes('Sturmwellenläufer')")


def test_broken_file_shows_a_message_naming_it(page, great_tits, tmp_path):
    broken = tmp_path / "broken_upload.wav"
    broken.write_bytes(b"RIFF0000WAVE this file is not audio")
    upload(page, "#inf-files", [broken, great_tits[1].path])
    page.click("#inf-run")
    status = page.locator("#inf-status")
    status.get_by_text("could not be analysed").wait_for(timeout=120_000)
    assert "broken_upload.wav" in status.inner_text()
    assert column(page, "#inf-species", 2)[0] == "Parus major"  # the good file was still analysed


def test_embedding_map_has_one_point_per_file(page):
    open_tab(page, "Embedding map")
    page.locator("#map-examples").get_by_role("checkbox").check()
    page.click("#map-run")
    page.locator("#map-status").get_by_text("Mapped").wait_for(timeout=300_000)
    text = page.locator("#map-status").inner_text()
    n = int(re.search(r"Mapped (\d+) recordings", text).group(1))
    assert n == 26
    points = page.locator("#map-plot .scatterlayer .point")
    points.first.wait_for()
    assert points.count() == n
    legend = page.locator("#map-plot .legendtext").all_text_contents()
    assert {"Great Tit B32", "Great Tit SW83", "Storm-Petrel", "Zebra Finch"} <= set(legend)
    shot(page, "embedding_map")


def count_rows(page) -> int:
    sync_api.expect(page.locator("#lb-count")).to_contain_text(re.compile(r"\d+ of \d+ results"))
    text = page.locator("#lb-count").inner_text()
    return int(re.search(r"(\d+) of \d+ results", text).group(1))


@pytest.fixture
def wide_page(app, browser):
    """The app at 1440 px wide (the README screenshot's width)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app.url)
    page.wait_for_selector("#inf-run")
    yield page
    context.close()


def table_column(page, table: str, index: int) -> list[str]:
    """The texts of one column of a gr.Dataframe, in the order the browser shows them."""
    return page.locator(f"{table} .virtual-body [role=row]").evaluate_all(
        f"rows => rows.map(r => r.querySelectorAll('[role=gridcell]')[{index}].innerText.trim())")


def header_index(page, table: str, title: str) -> int:
    return int(page.locator(f'{table} th[title="{title}"]').get_attribute("data-heading"))


def numbers(texts: list[str]) -> list[float]:
    return [float(t) for t in texts if t]


def test_leaderboard_table_pins_the_model_and_sorts_numerically(wide_page):
    page = wide_page
    open_tab(page, "Leaderboard")
    table = "#lb-t-table"
    page.locator(f"{table} .virtual-body [role=row]").first.wait_for()
    sync_api.expect(page.locator("#lb-t-caption")).to_contain_text("BEANS · accuracy · linear probe")
    page.wait_for_timeout(500)
    shot(page, "leaderboard")
    models = table_column(page, table, 0)
    assert len(models) == 20 and len(set(models)) == 20 and "BirdNET" in models
    ranks = numbers(table_column(page, table, header_index(page, table, "Mean rank")))
    assert ranks == sorted(ranks)  # best mean rank first
    # clicking a header sorts by it, numerically (12.9 sorts between 4.0 and 90.0, unlike text)
    params = header_index(page, table, "Params (M)")
    page.locator(f'{table} th[title="Params (M)"] .header-content').click()
    page.wait_for_function(f"""() => {{
        const rows = [...document.querySelectorAll('{table} .virtual-body [role=row]')];
        const v = rows.map(r => r.querySelectorAll('[role=gridcell]')[{params}].innerText.trim()).filter(t => t);
        return v.length > 3 && Number(v[0]) >= Number(v[v.length - 1]); }}""")
    descending = numbers(table_column(page, table, params))
    assert descending == sorted(descending, reverse=True) and {4.0, 12.9, 90.7} <= set(descending)
    page.locator(f'{table} th[title="Params (M)"] .header-content').click()
    page.wait_for_function(f"""() => {{
        const rows = [...document.querySelectorAll('{table} .virtual-body [role=row]')];
        const v = rows.map(r => r.querySelectorAll('[role=gridcell]')[{params}].innerText.trim()).filter(t => t);
        return v.length > 3 && Number(v[0]) < Number(v[v.length - 1]); }}""")
    ascending = numbers(table_column(page, table, params))
    assert ascending == sorted(ascending)
    # scrolled to the far right, the model column is still in view
    viewport = page.locator(f"{table} .virtual-table-viewport")
    assert viewport.evaluate("e => e.scrollWidth > e.clientWidth")  # there is something to scroll
    viewport.evaluate("e => { e.scrollLeft = e.scrollWidth; }")
    page.wait_for_timeout(300)
    assert viewport.evaluate("e => e.scrollLeft") > 0
    model_cell = page.locator(f"{table} .virtual-body [role=row]").first.locator("[role=gridcell]").first
    box, frame = model_cell.bounding_box(), viewport.bounding_box()
    assert frame["x"] - 1 <= box["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"]
    assert model_cell.inner_text().strip() in models
    last = page.locator(f'{table} th[title="Zoo entry"]').bounding_box()
    assert last["x"] + last["width"] <= frame["x"] + frame["width"] + 1  # the last column came into view
    # a zoo entry opens the Model zoo tab, searched for that model
    zoo = header_index(page, table, "Zoo entry")
    page.locator(f'{table} [role=gridcell][data-col="{zoo}"]', has_text="birdnet_v2_4").first.click()
    sync_api.expect(page.locator("#zoo-search textarea, #zoo-search input").first).to_have_value("birdnet_v2_4")
    page.wait_for_function("() => { const r = document.querySelectorAll('#zoo-table .virtual-body [role=row]');"
                           " return r.length === 1 && r[0].innerText.includes('birdnet_v2_4'); }")


def test_leaderboard_benchmark_choice_changes_the_table(page):
    open_tab(page, "Leaderboard")
    sync_api.expect(page.locator("#lb-t-caption")).to_contain_text("BEANS · accuracy")
    dropdown = page.locator("#lb-t-benchmark input")
    dropdown.click()
    page.get_by_role("option", name="BirdSet", exact=True).click()
    sync_api.expect(page.locator("#lb-t-caption")).to_contain_text("BirdSet · ")
    headers = page.locator("#lb-t-table th").evaluate_all("hs => hs.map(h => h.getAttribute('title'))")
    assert "watkins" not in headers and "HSN" in headers


def test_leaderboard_filter_changes_rows(page):
    open_tab(page, "Leaderboard")
    page.get_by_role("tab", name="All results (raw)").click()
    before = count_rows(page)
    assert before > 100
    dropdown = page.locator("#lb-benchmark input")
    dropdown.click()
    dropdown.fill("BEANS")
    page.get_by_role("option", name="BEANS", exact=True).click()
    page.keyboard.press("Escape")
    page.wait_for_function(  # a new count, not the old one nor a transient empty text
        f"() => {{ const m = /(\\d+) of \\d+ results/.exec(document.querySelector('#lb-count').innerText);"
        f" return m !== null && Number(m[1]) !== {before}; }}", timeout=60_000)
    after = count_rows(page)
    assert 0 < after < before
    shown = set(table_column(page, "#lb-table", header_index(page, "#lb-table", "benchmark")))
    assert shown == {"BEANS"}


def test_zoo_row_shows_card(page):
    open_tab(page, "Model zoo")
    table = page.locator("#zoo-table")
    search = page.get_by_label("Search", exact=True).last
    search.fill("no-such-model-xyz")
    cell = table.locator('[role="gridcell"]').filter(has_text="birdnet_v2_4")
    cell.first.wait_for(state="detached")
    search.fill("birdnet")
    cell.first.click()
    page.locator("#zoo-card").get_by_text("6522 classes").wait_for()
    sync_api.expect(page.locator("#zoo-card")).to_contain_text("CC BY-NC-SA 4.0")
    search.fill("")  # the whole zoo again; the card stays
    table.locator('[role="gridcell"]').filter(has_text="BirdNET").first.wait_for()
    page.wait_for_function("() => document.querySelectorAll('#zoo-table .virtual-row').length > 1")
    page.locator("#zoo-card").click()  # move focus off the table before the screenshot
    shot(page, "model_zoo")
