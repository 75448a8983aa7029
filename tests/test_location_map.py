"""The offline location picker's maths (equirectangular pixel <-> latitude/longitude) and its marker."""

from __future__ import annotations

import numpy as np
import pytest

from ui.location_map import MAP_PATH, latlon_to_pixel, map_size, map_with_marker, picked_place, pixel_to_latlon


def test_every_pixel_round_trips_and_lands_within_half_a_pixel():
    width, height = 720, 360
    for x in range(0, width, 7):
        for y in range(0, height, 5):
            lat, lon = pixel_to_latlon(x, y, width, height)
            assert latlon_to_pixel(lat, lon, width, height) == (x, y)
    for lat, lon in [(42.44, -76.50), (-33.9, 18.4), (0.0, 0.0), (89.9, 179.9), (-89.9, -179.9)]:
        back = pixel_to_latlon(*latlon_to_pixel(lat, lon, width, height), width, height)
        assert abs(back[0] - lat) <= 0.25 and abs(back[1] - lon) <= 0.5


def test_corners_and_centre():
    assert pixel_to_latlon(0, 0, 720, 360) == (89.75, -179.75)
    assert pixel_to_latlon(719, 359, 720, 360) == (-89.75, 179.75)
    assert pixel_to_latlon(360, 180, 720, 360) == (-0.25, 0.25)
    assert latlon_to_pixel(90, -180, 720, 360) == (0, 0)
    assert latlon_to_pixel(-90, 180, 720, 360) == (0, 359)  # 180 east is 180 west: the left column


def test_clamping_and_wrapping():
    assert pixel_to_latlon(-5, -3, 720, 360) == pixel_to_latlon(0, 0, 720, 360)
    assert pixel_to_latlon(900, 400, 720, 360) == pixel_to_latlon(719, 359, 720, 360)
    assert latlon_to_pixel(123, 0, 720, 360) == latlon_to_pixel(90, 0, 720, 360)
    assert latlon_to_pixel(-95, 0, 720, 360)[1] == 359
    assert latlon_to_pixel(10, 190, 720, 360) == latlon_to_pixel(10, -170, 720, 360)


def test_the_map_asset_is_small_and_the_marker_is_drawn_at_the_place():
    assert MAP_PATH.stat().st_size < 200_000
    assert map_size() == (720, 360)
    plain = np.asarray(map_with_marker())
    marked = np.asarray(map_with_marker(42.44, -76.5))
    changed = np.argwhere((plain != marked).any(axis=2))
    x, y = latlon_to_pixel(42.44, -76.5, 720, 360)
    ocean = plain[latlon_to_pixel(30, -40, 720, 360)[::-1]]  # mid-Atlantic
    assert (np.abs(plain[y, x].astype(int) - ocean).sum() > 20)  # Ithaca, NY is drawn as land
    assert len(changed) > 20
    assert changed[:, 1].min() >= x - 8 and changed[:, 1].max() <= x + 8
    assert changed[:, 0].min() >= y - 8 and changed[:, 0].max() <= y + 8
    assert tuple(marked[y, x]) == (0xDC, 0x26, 0x26)


@pytest.mark.parametrize(("x", "y", "lat", "lon"), [(206, 95, "42.25", "-76.75"), (397, 247, "-33.75", "18.75")])
def test_a_click_gives_two_decimal_coordinates(x, y, lat, lon):
    assert picked_place(x, y) == (lat, lon)
