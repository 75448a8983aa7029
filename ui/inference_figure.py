"""The inference tab's listening side, without Gradio: the figure (spectrogram over the detections timeline, one
time axis) and the WAV the player plays, for any part of a file, and the clips of chosen detections."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import get_colorscale

from ui.common import UserFacingError
from ui.inference_view import CONTEXT_S, FileView, Options, Run
from ui.spectrogram import picture_uri, playable_segment, read_view, spectrogram_picture

# As the default, plotly_white is applied when a figure is serialised; passed to each figure, plotly validates a
# fresh copy of it every time (about 30 ms per request).
pio.templates.default = "plotly_white"
#: outline colour of call boxes on the spectrogram
BOX_COLOUR = "#ff4040"
#: the timeline's colours (plotly's Viridis, as its validator would write it)
VIRIDIS = get_colorscale("Viridis")
#: most clips in one zip
MAX_CLIPS = 200


@dataclass
class Listening:
    """A part of one file: its playable WAV and the figure (spectrogram over the timeline, one time axis)."""

    audio: str | None
    caption: str
    figure: go.Figure
    start_s: float
    end_s: float


def view_figure(view: FileView | None, picture: Any = None, start_s: float = 0.0, end_s: float = 0.0,
                nyquist_khz: float = 0.0, min_conf: float = 0.25, below: str = "fade") -> go.Figure:
    """Spectrogram (top) and the detections timeline (bottom) sharing one time axis in seconds."""
    if view is None:
        fig = go.Figure()
        fig.add_annotation(text="Analyse a recording to see its spectrogram and detections here", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper")
        fig.update_layout(height=200, xaxis_visible=False, yaxis_visible=False)
        return fig
    rows = len(view.timeline_labels)
    spec_px, row_px = 240, 28
    timeline_px = row_px * max(rows, 1)
    # make_subplots' layout (two rows, one shared time axis, 3% between them), written out: building the figure
    # through plotly's validators took 25 ms of each request, this dict takes 1 ms
    spec_share = 0.97 * spec_px / (spec_px + timeline_px)
    layout: dict[str, Any] = {
        "xaxis": {"anchor": "y", "domain": [0.0, 1.0], "matches": "x2", "showticklabels": False,
                  "range": [start_s, end_s], "showgrid": False},
        "yaxis": {"anchor": "x", "domain": [1.0 - spec_share, 1.0], "title": {"text": "kHz"},
                  "range": [0, nyquist_khz], "showgrid": False},
        "xaxis2": {"anchor": "y2", "domain": [0.0, 1.0], "range": [start_s, end_s], "showgrid": False,
                   "title": {"text": "time in the recording (s)"}},
        "yaxis2": {"anchor": "x2", "domain": [0.0, 0.97 - spec_share]},
        "title": {"text": f"{view.name} · {start_s:.1f}-{end_s:.1f} s of {view.duration_s:.1f} s", "x": 0.01},
        "height": 90 + spec_px + timeline_px, "margin": {"l": 10, "r": 10, "t": 40, "b": 40}, "clickmode": "event",
    }
    # an invisible trace gives the spectrogram's axes their ranges; the picture is drawn in data coordinates
    data: list[dict[str, Any]] = [{"type": "scatter", "x": [start_s, end_s], "y": [0, nyquist_khz], "mode": "markers",
                                   "marker": {"opacity": 0}, "hoverinfo": "skip", "showlegend": False,
                                   "xaxis": "x", "yaxis": "y"}]
    if picture is not None:
        layout["images"] = [{"source": picture, "xref": "x", "yref": "y", "x": start_s, "y": nyquist_khz,
                             "sizex": end_s - start_s, "sizey": nyquist_khz, "sizing": "stretch", "layer": "below"}]
    if rows:
        scores = np.asarray(view.timeline_scores, dtype=float)
        hover = "%{y}<br>%{x:.1f} s<br>score %{z:.2f}<extra></extra>"
        timeline = {"type": "heatmap", "x": view.timeline_edges, "y": view.timeline_labels, "zmin": 0, "zmax": 1,
                    "xaxis": "x2", "yaxis": "y2"}
        if below == "fade":
            data.append({**timeline, "z": np.where(scores < min_conf, scores, np.nan),
                         "colorscale": [[0, "#f3f4f6"], [1, "#9ca3af"]], "showscale": False,
                         "hovertemplate": hover.replace("score", "below min. confidence, score")})
        data.append({**timeline, "z": np.where(scores >= min_conf, scores, np.nan), "colorscale": VIRIDIS,
                     "colorbar": {"title": {"text": "score"}, "len": 0.3, "y": 0, "yanchor": "bottom"},
                     "hovertemplate": hover})
        layout["yaxis2"]["autorange"] = "reversed"
    if view.calls is not None:  # each call's time-frequency box on the spectrogram
        shown = view.calls[(view.calls["end (s)"] >= start_s) & (view.calls["start (s)"] <= end_s)]
        layout["shapes"] = [{"type": "rect", "x0": c[0], "x1": c[1], "y0": c[2], "y1": c[3], "xref": "x",
                             "yref": "y", "line": {"color": BOX_COLOUR, "width": 1.5}}
                            for c in shown.head(500).itertuples(index=False)]
    return go.Figure({"data": data, "layout": layout}, _validate=False)


def listen(run: Run, name: str, view: FileView, start_s: float, end_s: float, options: Options) -> Listening:
    """Decode ``start_s``-``end_s`` of the file once, for the player and the spectrogram."""
    info = run.infos[name]
    start_s = max(0.0, float(start_s))
    end_s = min(float(info.duration_s), max(float(end_s), start_s + 0.1))
    audio, sr = read_view(run.paths[name], start_s, end_s, info)
    wav = run.out / f"{Path(name).stem}_{start_s:07.1f}-{end_s:07.1f}s.wav"
    path, caption = playable_segment(audio, sr, wav)
    figure = view_figure(view, picture_uri(spectrogram_picture(audio, sr)), start_s, end_s, sr / 2000,
                         options.min_conf, options.below)
    caption = f"{name} · {start_s:.1f}-{end_s:.1f} s" + (f" · {caption}" if caption else "")
    return Listening(path, caption, figure, start_s, end_s)


#: the clips table: a checkbox per detection (what the user ticks) and what identifies it
CLIP_COLUMNS = ["clip", "species", "at (s)", "score"]


def _detections(run: Run, name: str, options: Options) -> pd.DataFrame:
    """The windows of ``name`` scoring at least min_conf (the current filters; your classifier's classes too),
    best first, at most MAX_CLIPS."""
    from rl_core.detection_filters import display_label

    result, custom = run.results[name], run.custom.get(name)
    tables = [pd.DataFrame(columns=["scientific_name", "common_name", "start_s", "end_s", "score"])]
    if result.has_scores:
        tables.append(options.detection_filter().view(result).top_k_table(run.top_k, options.min_conf))
    if custom is not None:
        tables.append(custom.top_k_table(len(custom.labels), options.min_conf))
    table = pd.concat([t for t in tables if len(t)] or tables[:1], ignore_index=True)
    table = table.sort_values("score", ascending=False).head(MAX_CLIPS).reset_index(drop=True)
    table["label"] = [display_label(r.scientific_name, r.common_name) for r in table.itertuples(index=False)]
    return table


def clip_choices(run: Run | None, name: str | None, options: Options) -> pd.DataFrame:
    """The detections the clips export offers, best first, all ticked."""
    if run is None or name not in run.results or not (run.results[name].has_scores or name in run.custom):
        return pd.DataFrame(columns=CLIP_COLUMNS)
    table = _detections(run, name, options)
    return pd.DataFrame({"clip": True, "species": table["label"], "at (s)": table["start_s"].round(2),
                         "score": table["score"].round(3)}, columns=CLIP_COLUMNS)


def clips_zip(run: Run, name: str, options: Options, chosen: pd.DataFrame | None = None) -> Path:
    """The detections of ``name`` ticked in ``chosen`` (rows of ``clip_choices``; None: all of them) as a zip of
    short WAVs named by species, file and time."""
    from rl_core.exports import Clip, write_clips_zip

    table = _detections(run, name, options)
    if table.empty:
        raise UserFacingError(f"{name}: no detection scores at least {options.min_conf:g}: lower the minimum "
                              "confidence to export clips")
    if chosen is not None:
        ticked = chosen[chosen["clip"].astype(str).str.lower() == "true"]  # the page may send "true"
        keys = set(zip(ticked["species"].astype(str), ticked["at (s)"].astype(float).round(2)))
        table = table[[(r.label, round(float(r.start_s), 2)) in keys for r in table.itertuples(index=False)]]
        if table.empty:
            raise UserFacingError("tick at least one detection in the clips table to export its clip")
    clips = [Clip(run.paths[name], name, r.label.replace(" (", "_"), r.start_s, r.end_s)
             for r in table.itertuples(index=False)]
    return write_clips_zip(clips, run.out / f"{Path(name).stem}_clips.zip", CONTEXT_S,
                           settings=run.export_settings(options))
