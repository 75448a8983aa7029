"""In headless Chromium: the location picker map of the inference tab, and a saved classifier applied there."""

from __future__ import annotations

import re

import pytest
from test_e2e import analyse_example, app, browser, column, page, shot, upload  # noqa: F401 - fixtures

from ui.location_map import latlon_to_pixel

pytestmark = pytest.mark.e2e

ITHACA = (42.44, -76.50)


def click_map_pixel(page, x: int, y: int) -> None:
    """Click the centre of pixel (x, y) of the map image as the browser shows it (scaled, letterboxed)."""
    where = page.locator("#inf-map img").evaluate(
        """(img, [x, y]) => {
             const r = img.getBoundingClientRect();
             const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
             const left = r.left + (r.width - img.naturalWidth * scale) / 2;
             const top = r.top + (r.height - img.naturalHeight * scale) / 2;
             return [left + (x + 0.5) * scale - r.left, top + (y + 0.5) * scale - r.top];
           }""", [x, y])
    page.locator("#inf-map img").click(position={"x": where[0], "y": where[1]})


def field(page, selector: str) -> str:
    return page.locator(f"{selector} input, {selector} textarea").first.input_value()


def test_clicking_the_map_sets_the_place_and_filters_the_species(page):
    page.locator("#inf-map img").wait_for()
    before = page.locator("#inf-map img").get_attribute("src")
    click_map_pixel(page, *latlon_to_pixel(*ITHACA, 720, 360))
    page.wait_for_function("() => document.querySelector('#inf-lat input, #inf-lat textarea').value !== ''")
    lat, lon = float(field(page, "#inf-lat")), float(field(page, "#inf-lon"))
    assert abs(lat - ITHACA[0]) <= 0.5 and abs(lon - ITHACA[1]) <= 0.5  # one pixel is 0.5 degree
    page.wait_for_function(f"() => document.querySelector('#inf-map img').getAttribute('src') !== {before!r}")
    # a European storm petrel is not expected in New York: the filter removes it from this recording
    analyse_example(page)
    assert "Hydrobates pelagicus" not in column(page, "#inf-species", 2)
    page.locator("#inf-removed-box").get_by_text(re.compile(r"Removed by the location filter: \d+ species")).click()
    assert "Hydrobates pelagicus" in column(page, "#inf-removed", 1)
    page.locator("#inf-map").scroll_into_view_if_needed()
    shot(page, "inference_map")
    # typed coordinates move the marker (Cape Town)
    marked = page.locator("#inf-map img").get_attribute("src")
    for selector, value in (("#inf-lat", "-33.9"), ("#inf-lon", "18.4")):
        box = page.locator(f"{selector} input, {selector} textarea").first
        box.fill(value)
        box.press("Enter")
    page.wait_for_function(f"() => document.querySelector('#inf-map img').getAttribute('src') !== {marked!r}")


def test_your_classifier_lists_its_class_beside_birdnet(page, tmp_path):
    from classifier_fixture import CLASS, save_petrel_classifier

    files = save_petrel_classifier(tmp_path)
    upload(page, "#inf-classifier", list(files))
    analyse_example(page)
    page.locator("#inf-status").get_by_text("Your classifier petrel scored every window").wait_for()
    names = column(page, "#inf-species", 1)
    assert "your classifier: petrel" in names and column(page, "#inf-species", 2)[names.index(
        "your classifier: petrel")] == CLASS
    assert column(page, "#inf-species", 2)[0] == "Hydrobates pelagicus"
    assert page.locator("#inf-view").get_by_text(f"your classifier: petrel ({CLASS})").count() >= 1
    shot(page, "inference_classifier")
