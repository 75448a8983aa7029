"""The offline location picker: a small equirectangular world map (``assets/maps/world_110m.png``, Natural Earth
outlines drawn once by ``assets/maps/make_world_map.py``) where a click gives latitude/longitude and a marker
shows the place. No map tiles and no CDN: plotly's geo traces fetch their topojson online, field laptops are not.
"""

from __future__ import annotations

import math
from functools import lru_cache

import gradio as gr
from PIL import Image, ImageDraw

from ui.common import ASSETS_DIR

MAP_PATH = ASSETS_DIR / "maps" / "world_110m.png"
MARKER_RADIUS = 6
MARKER_FILL, MARKER_EDGE = "#dc2626", "#ffffff"


def pixel_to_latlon(x: float, y: float, width: int, height: int) -> tuple[float, float]:
    """The (latitude, longitude) at the centre of pixel (x, y) of an equirectangular ``width`` x ``height`` world
    map (x: -180..180 east; y: 90..-90 south); a pixel outside the map counts as the nearest edge pixel."""
    col = min(max(int(x), 0), width - 1)
    row = min(max(int(y), 0), height - 1)
    return 90.0 - (row + 0.5) * 180.0 / height, -180.0 + (col + 0.5) * 360.0 / width


def latlon_to_pixel(lat: float, lon: float, width: int, height: int) -> tuple[int, int]:
    """The pixel (x, y) holding (``lat``, ``lon``); latitudes beyond ±90 are clamped, longitudes wrap (190 = -170)."""
    lat = min(max(float(lat), -90.0), 90.0)
    lon = (float(lon) + 180.0) % 360.0 - 180.0
    col = min(int((lon + 180.0) / 360.0 * width), width - 1)
    row = min(int((90.0 - lat) / 180.0 * height), height - 1)
    return col, row


@lru_cache(maxsize=1)
def _base_map() -> Image.Image:
    with Image.open(MAP_PATH) as image:
        return image.convert("RGB")


def map_size() -> tuple[int, int]:
    return _base_map().size


def map_with_marker(lat: float | None = None, lon: float | None = None) -> Image.Image:
    """The world map, with a marker at (``lat``, ``lon``) when both are given."""
    image = _base_map().copy()
    if lat is None or lon is None:
        return image
    x, y = latlon_to_pixel(lat, lon, *image.size)
    pen = ImageDraw.Draw(image)
    r = MARKER_RADIUS
    pen.ellipse((x - r, y - r, x + r, y + r), fill=MARKER_FILL, outline=MARKER_EDGE, width=2)
    return image


def picked_place(x: float, y: float) -> tuple[str, str]:
    """The latitude and longitude text for a click at pixel (x, y) of the map (2 decimals; the map's pixel is
    0.5 degree, so more would pretend a precision it does not have)."""
    lat, lon = pixel_to_latlon(x, y, *map_size())
    return f"{lat:.2f}", f"{lon:.2f}"


# --------------------------------------------------------------------------- Gradio events
def on_map_pick(evt: gr.SelectData):
    """A click on the map (``gr.SelectData``, ``index`` = [x, y] in the image's pixels): the latitude and longitude
    fields and the map with its marker."""
    lat, lon = picked_place(*evt.index[:2])
    return lat, lon, map_with_marker(float(lat), float(lon))


def on_place_typed(lat, lon):
    """Typed coordinates move the marker (an unreadable number leaves the map as it is; the run reports it)."""
    try:
        lat_deg, lon_deg = (float(str(v).strip().replace("°", "")) if str(v or "").strip() else None
                            for v in (lat, lon))
    except ValueError:
        return gr.skip()
    if any(v is not None and not math.isfinite(v) for v in (lat_deg, lon_deg)):
        return gr.skip()
    return map_with_marker(lat_deg, lon_deg)
