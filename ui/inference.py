"""Inference tab: recordings in; species, a timeline over the spectrogram, a player and downloads out.

``analyse`` runs the model once per request and keeps the results on the server (``_RUNS``); ``render`` turns
them into what the tab shows for the current filter settings (``Options``), so changing the minimum confidence,
the location or the language re-draws at once without a second model pass. Filters and names come from
``rl_core.detection_filters`` (the CLI's), exports from ``rl_core.inference``. A file that cannot be read is
named in the status line while the others are analysed; no error is raised to Gradio (no red badges).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from ui.common import (
    SETTINGS,
    RequestCancelled,
    UserFacingError,
    analysis_limits,
    check_file_size,
    default_model,
    describe_error,
    display_name,
    example_recordings,
    get_model,
    model_concurrency_id,
    model_choices,
    model_infos,
    model_slot,
    new_output_dir,
    progress_adapter,
)
from rl_core.errors import RLCoreError
from ui.malloc import release_memory
from ui.spectrogram import picture_uri, playable_segment, read_view, spectrogram_picture

log = logging.getLogger(__name__)
# As the default, plotly_white is applied when a figure is serialised; passed to each figure, plotly validates a
# fresh copy of it every time (about 30 ms per request).
pio.templates.default = "plotly_white"

TIMELINE_SPECIES = 10
#: best classes kept per window (rl_core's keep_top): a long file's full (windows x classes) score matrix would
#: hold hundreds of MB; a class outside a window's best 50 counts as 0 there in means and the timeline
KEPT_SCORES = 50
#: seconds of audio around a clicked detection (before and after its window)
CONTEXT_S = 1.0
#: what the player and spectrogram show when no detection is clicked
VIEW_SECONDS = 30.0
#: most clips in one zip
MAX_CLIPS = 200
#: faded rows and timeline cells go down to this score; lower ones are noise and never shown
DISPLAY_FLOOR = 0.01
SUMMARY_COLUMNS = ["file", "duration (s)", "windows", "top species", "best score", "detections"]
SPECIES_COLUMNS = ["rank", "common name", "scientific name", "max score", "mean score", "at (s)", "windows ≥ min"]
REMOVED_COLUMNS = ["common name", "scientific name", "max score", "windows", "occurrence here"]
BELOW_CHOICES = [("show them faded", "fade"), ("hide them", "hide")]
WEAK_STYLE = "color: #9ca3af; font-style: italic"
_URL = re.compile(r"\w+://\S+|(?<![\w.])/(?:[\w.+-]+/)+[\w.+-]*")


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Options:
    """The tab's filter and display choices (BirdNET-Analyzer's names in brackets)."""

    min_conf: float = 0.25  # --min_conf
    sensitivity: float = 1.0  # --sensitivity
    overlap_s: float = 0.0  # --overlap: the hop is the window length minus this
    lat: float | None = None
    lon: float | None = None
    date: str | None = None  # YYYY-MM-DD -> week 1-48; empty: year-round
    location_threshold: float = 0.03  # --sf_thresh
    species_list: str | None = None  # path of a --slist file
    language: str = "en"  # --locale
    below: str = "fade"  # scores under min_conf: "fade" or "hide"

    @property
    def week(self) -> int | None:
        from rl_core.detection_filters import week_of_date

        if self.lat is None or self.lon is None:
            return None
        return week_of_date(self.date) if self.date else -1

    def detection_filter(self):
        from rl_core.detection_filters import DetectionFilter, read_species_list

        if (self.lat is None) != (self.lon is None):
            raise UserFacingError("the location filter needs both latitude and longitude (or neither)")
        if self.below not in {"fade", "hide"}:
            raise UserFacingError(f"below-threshold display must be 'fade' or 'hide', got {self.below!r}")
        species = tuple(read_species_list(self.species_list)) if self.species_list else None
        return DetectionFilter(
            min_conf=float(self.min_conf), sensitivity=float(self.sensitivity), lat=self.lat, lon=self.lon,
            week=self.week, location_threshold=float(self.location_threshold), species_list=species,
            language=self.language or "en",
        )

    def export_settings(self, model: str, top_k: int, hop_s: float | None) -> dict[str, Any]:
        """What every export is headed with."""
        return {
            "model": model, "min_conf": self.min_conf, "sensitivity": self.sensitivity,
            "overlap_s": self.overlap_s, "hop_s": hop_s, "latitude": self.lat, "longitude": self.lon,
            "date": self.date or None, "week": self.week, "location_threshold": self.location_threshold,
            "species_list": display_name(self.species_list) if self.species_list else None,
            "language": self.language, "species_per_file": top_k,
        }


def _number(value: Any, what: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        value = float(str(value).strip().replace("°", ""))
    except ValueError:
        raise UserFacingError(f"{what} '{value}' is not a number: write decimal degrees, e.g. 42.45") from None
    return None if np.isnan(value) else value


def options_from_inputs(min_conf=0.25, sensitivity=1.0, overlap_s=0.0, lat=None, lon=None, date=None,
                        location_threshold=0.03, species_list=None, language="en", below="fade") -> Options:
    """Options from the components' values (Gradio gives '' or None for empty fields)."""
    if isinstance(species_list, dict):  # gradio_client's FileData
        species_list = species_list.get("path")
    if isinstance(date, (int, float)) and not isinstance(date, bool):
        from datetime import datetime, timezone

        date = datetime.fromtimestamp(float(date), tz=timezone.utc).date().isoformat()
    return Options(
        min_conf=float(min_conf), sensitivity=float(sensitivity), overlap_s=float(overlap_s or 0.0),
        lat=_number(lat, "latitude"), lon=_number(lon, "longitude"), date=(str(date).strip()[:10] or None) if date else None,
        location_threshold=float(location_threshold), species_list=species_list or None,
        language=language or "en", below=below or "fade",
    )


# --------------------------------------------------------------------------- server-side results
@dataclass
class Run:
    """One request's results, kept on the server (Gradio deep-copies gr.State; scores matrices stay here)."""

    model: str
    top_k: int
    hop_s: float | None
    out: Path
    results: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    infos: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: uploads renamed because an earlier one had the same name
    renamed: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


_RUNS: OrderedDict[str, Run] = OrderedDict()
_RUNS_LOCK = threading.Lock()
_MAX_RUNS = 8


def _keep(run: Run) -> None:
    with _RUNS_LOCK:
        _RUNS[run.id] = run
        while len(_RUNS) > _MAX_RUNS:
            _RUNS.popitem(last=False)


def _run(run_id: str | None) -> Run | None:
    with _RUNS_LOCK:
        return _RUNS.get(run_id or "")


# --------------------------------------------------------------------------- models
def _scrub(text: str) -> str:
    """No URL (they may carry access tokens) and no server path reaches the page."""
    return _URL.sub("…", text)


def load_model(name: str):
    """The cached model, or at once a one-sentence error saying what to do (no silent download retries)."""
    infos = model_infos()
    if not name:
        raise UserFacingError("choose a model first")
    if name not in infos:
        raise UserFacingError(f"unknown model '{name}'; choose one from the list")
    from rl_core.catalog import require_weights

    try:
        require_weights(name)  # at once when the weights are absent and cannot be downloaded now
    except RLCoreError as exc:
        raise UserFacingError(f"{_scrub(str(exc))} Meanwhile choose a model marked 'ready' (birdnet_v2_4 gives "
                              "species names).") from None
    try:
        return get_model(name)
    except Exception as exc:  # noqa: BLE001 - one sentence, never a traceback or a URL
        raise UserFacingError(_scrub(describe_error(exc, f"model {name} could not be loaded"))) from None


# --------------------------------------------------------------------------- the model pass
def resolve_inputs(files: list[str] | str | None, example: str | None = None) -> list[Path]:
    """Uploaded paths plus the chosen bundled example (by file name)."""
    paths = [Path(p) for p in ([files] if isinstance(files, str) else (files or []))]
    if example:
        matches = [p for p in example_recordings() if p.name == example]
        if not matches:
            raise UserFacingError(f"unknown example '{example}'")
        paths.append(matches[0])
    if not paths:
        raise UserFacingError("add one or more recordings (drag them onto the upload box) or pick an example")
    return paths


def analyse(
    files: list[str] | str | None,
    model_name: str,
    top_k: int = 5,
    example: str | None = None,
    progress: Any = None,
    options: Options | None = None,
) -> Run:
    """Run ``model_name`` on every file once; results are kept for ``render``. Per-file problems go to ``errors``."""
    from rl_core.audio import audio_info
    from rl_core.inference import analyse_recording, unique_names

    options = options or Options()
    options.detection_filter()  # bad settings fail before the model pass
    paths = resolve_inputs(files, example)
    top_k = int(top_k)
    if not 1 <= top_k <= 50:
        raise UserFacingError(f"species per file must be between 1 and 50, got {top_k}")
    report = progress_adapter(progress)
    report(0.0, f"loading {model_name}")
    model = load_model(model_name)
    window_s = model.window_samples / model.sample_rate
    if not 0.0 <= options.overlap_s < window_s:
        raise UserFacingError(f"overlap must be at least 0 s and below the model's {window_s:g}-s window, "
                              f"got {options.overlap_s:g}")
    hop_s = window_s - options.overlap_s if options.overlap_s else None
    run = Run(model=model_name, top_k=top_k, hop_s=hop_s, out=new_output_dir("inference"))
    limits = analysis_limits()
    # two uploads with one name (song.wav twice) become song.wav and song (2).wav in every output
    names = unique_names([display_name(p) for p in paths])
    run.renamed = [f"upload {i + 1} ({display_name(p)}) is {n}" for i, (p, n) in enumerate(zip(paths, names))
                   if n != display_name(p)]
    for i, (path, name) in enumerate(zip(paths, names)):

        def file_progress(fraction: float, message: str = "", i: int = i) -> None:
            report((i + fraction) / len(paths), message)

        try:
            check_file_size(path)
            info = audio_info(path)  # the one header read of this request
            with model_slot(model):
                run.results[name] = analyse_recording(model, path, name=name, info=info, limits=limits, hop_s=hop_s,
                                                      progress=file_progress, keep_top=max(KEPT_SCORES, top_k))
            run.paths[name], run.infos[name] = path, info
        except RequestCancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - reported by its upload name, the other files go on
            run.errors.append(_scrub(describe_error(exc, name)))
    _keep(run)
    return run


# --------------------------------------------------------------------------- what the tab shows
@dataclass
class FileView:
    """One file under the current options: tables and timeline data (no audio, no score matrix)."""

    name: str
    duration_s: float
    window_s: float
    species: pd.DataFrame
    weak: list[bool]
    removed: pd.DataFrame
    timeline_edges: list[float]
    timeline_labels: list[str]
    timeline_scores: np.ndarray
    calls: pd.DataFrame | None = None


def species_table(result: Any, k: int, min_conf: float = 0.25) -> pd.DataFrame:
    """Top-k classes of one (filtered) result with the tab's columns; classes the filters removed are left out."""
    from rl_core.detection_filters import is_non_species

    summary = result.file_summary(k, threshold=min_conf)
    summary = summary[summary["max_score"] >= min(DISPLAY_FLOOR, min_conf)].reset_index(drop=True)
    non_species = summary["scientific_name"].map(is_non_species)
    table = pd.DataFrame({
        "rank": np.arange(1, len(summary) + 1),
        "common name": summary["common_name"].where(summary["common_name"] != "", summary["scientific_name"]),
        "scientific name": summary["scientific_name"].where(~non_species, "(non-species sound)"),
        "max score": summary["max_score"].round(4), "mean score": summary["mean_score"].round(4),
        "at (s)": summary["best_window_start_s"].round(2), "windows ≥ min": summary["windows_at_or_above"],
    })
    return table[SPECIES_COLUMNS]


def removed_table(result: Any, flt: Any) -> pd.DataFrame:
    """Species found above min_conf that the location/week filter removed, with their occurrence score there."""
    if not flt.uses_location or not result.has_scores:
        return pd.DataFrame(columns=REMOVED_COLUMNS)
    removed = flt.removed_by_location(result.top_k_table(5))
    if removed.empty:
        return pd.DataFrame(columns=REMOVED_COLUMNS)
    names = flt.view(result).common_names or []
    common = dict(zip(result.labels, names))
    grouped = removed.groupby("scientific_name").agg(score=("score", "max"), windows=("score", "size"),
                                                     occurrence=("occurrence", "first"))
    grouped = grouped.sort_values("score", ascending=False).reset_index()
    return pd.DataFrame({
        "common name": grouped["scientific_name"].map(common).fillna(grouped["scientific_name"]),
        "scientific name": grouped["scientific_name"], "max score": grouped["score"].round(4),
        "windows": grouped["windows"], "occurrence here": grouped["occurrence"].round(4),
    })[REMOVED_COLUMNS]


CALL_COLUMNS = ["start (s)", "end (s)", "low (kHz)", "high (kHz)", "scientific name", "common name", "species prob",
                "detection prob"]
#: outline colour of call boxes on the spectrogram
BOX_COLOUR = "#ff4040"


def calls_view(result: Any, min_prob: float) -> pd.DataFrame | None:
    """Detected calls (call detectors such as BatDetect2) with detection probability >= ``min_prob``; None for
    models that score windows."""
    if result.calls is None:
        return None
    calls = result.calls_table(min_prob)
    return pd.DataFrame({
        "start (s)": calls["start_s"].round(4), "end (s)": calls["end_s"].round(4),
        "low (kHz)": (calls["low_freq_hz"] / 1000).round(1), "high (kHz)": (calls["high_freq_hz"] / 1000).round(1),
        "scientific name": calls["scientific_name"], "common name": calls["common_name"],
        "species prob": calls["class_prob"].round(3), "detection prob": calls["detection_prob"].round(3),
    }, columns=CALL_COLUMNS)


def file_view(run: Run, name: str, options: Options, flt: Any = None) -> FileView:
    result = run.results[name]
    flt = flt or options.detection_filter()
    window_s = float(result.ends[0] - result.starts[0]) if result.num_windows else 0.0
    if run.hop_s is None and result.num_windows > 1:
        window_s = float(result.starts[1] - result.starts[0])
    calls = calls_view(result, options.min_conf)  # BatDetect2: one row and one box per call
    if not result.has_scores:
        return FileView(name, float(result.duration_s), window_s, pd.DataFrame(columns=SPECIES_COLUMNS), [],
                        pd.DataFrame(columns=REMOVED_COLUMNS), [], [], np.zeros((0, 0)), calls)
    view = flt.view(result)
    species = species_table(view, run.top_k, options.min_conf)
    weak = (species["max score"] < options.min_conf).tolist()
    timeline = view.timeline(TIMELINE_SPECIES)
    keep = [i for i, row in enumerate(timeline.scores) if row.max() >= min(DISPLAY_FLOOR, options.min_conf)]
    if options.below == "hide":
        keep = [i for i in keep if timeline.scores[i].max() >= options.min_conf]
        species = species[[not w for w in weak]].reset_index(drop=True)
        weak = [False] * len(species)
    return FileView(
        name=name, duration_s=float(result.duration_s), window_s=window_s, species=species, weak=weak,
        removed=removed_table(result, flt), timeline_edges=timeline.edges,
        timeline_labels=[timeline.labels[i] for i in keep], timeline_scores=timeline.scores[keep], calls=calls,
    )


SCORE_FORMAT = {"duration (s)": "{:.1f}", "max score": "{:.3f}", "mean score": "{:.3f}", "at (s)": "{:.1f}", "occurrence here": "{:.3f}",
                "best score": "{:.3f}"}


def _formatted(frame: pd.DataFrame, weak: list[bool] | None = None):
    """Scores with 3 decimals (not "1.000000" cut into two lines); rows in ``weak`` in grey italics."""
    style = frame.style.format({c: f for c, f in SCORE_FORMAT.items() if c in frame.columns}, na_rep="")
    if weak is not None and any(weak):
        style = style.apply(lambda row: [WEAK_STYLE if weak[row.name] else ""] * len(row), axis=1)
    return style


def styled_species(view: FileView | None):
    """The species table, rows under the minimum confidence in grey italics."""
    if view is None or view.species.empty:
        return pd.DataFrame(columns=SPECIES_COLUMNS)
    return _formatted(view.species, view.weak)


def summary_table(run: Run, options: Options, flt: Any) -> pd.DataFrame:
    rows = []
    for name, result in run.results.items():
        top, best, count = "", None, 0
        if result.has_scores:
            view = flt.view(result)
            summary = view.file_summary(1, threshold=options.min_conf)
            if len(summary) and summary["max_score"].iloc[0] > 0:
                top = summary["common_name"].iloc[0] or summary["scientific_name"].iloc[0]
                top = f"{top} ({summary['scientific_name'].iloc[0]})" if top != summary["scientific_name"].iloc[0] else top
                best = round(float(summary["max_score"].iloc[0]), 4)
            count = len(view.top_k_table(run.top_k, options.min_conf))
        rows.append([name, round(float(result.duration_s), 2), result.num_windows, top, best, count])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def write_exports(run: Run, options: Options, flt: Any) -> list[str]:
    """Predictions CSV (settings in its header), Raven and Audacity tables per file, embeddings, settings.json."""
    from rl_core.atomic import atomic_write
    from rl_core.exports import audacity_labels, predictions_csv, raven_selection_table, save_embeddings_npz

    settings = options.export_settings(run.model, run.top_k, run.hop_s)
    results = list(run.results.values())
    views = [flt.view(r) for r in results if r.has_scores]
    downloads: list[str] = []
    if views:
        path = run.out / "predictions.csv"
        with atomic_write(path, "w", encoding="utf-8") as handle:
            handle.write(predictions_csv(views, run.top_k, options.min_conf, settings=settings))
        downloads.append(str(path))
    for view in views:
        stem = Path(view.name).stem
        for suffix, text in ((".selections.txt", raven_selection_table(view, run.top_k, options.min_conf)),
                             (".labels.txt", audacity_labels(view, run.top_k, options.min_conf))):
            with atomic_write(run.out / f"{stem}{suffix}", "w", encoding="utf-8") as handle:
                handle.write(text)
            downloads.append(str(run.out / f"{stem}{suffix}"))
    if any(r.embeddings is not None for r in results):
        downloads.append(str(save_embeddings_npz(results, run.out / "embeddings.npz", model=run.model)))
    if results:
        with atomic_write(run.out / "settings.json", "w", encoding="utf-8") as handle:
            json.dump(settings, handle, indent=1)
        downloads.append(str(run.out / "settings.json"))
    return downloads


def status_message(run: Run) -> str:
    done = f"Analysed {len(run.results)} file(s) with **{run.model}**."
    if run.renamed:
        done += f" Uploads sharing a name are told apart in every output: {'; '.join(run.renamed)}."
    if not run.errors:
        return done
    problems = "\n".join(f"- ⚠️ {e}" for e in run.errors)
    return f"{done}\n\n**{len(run.errors)} file(s) could not be analysed:**\n{problems}"


# --------------------------------------------------------------------------- listening and the view figure
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
    height = 90 + spec_px + row_px * max(rows, 1)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        row_heights=[spec_px, row_px * max(rows, 1)])
    # an invisible trace gives the spectrogram's axes their ranges; the picture is drawn in data coordinates
    fig.add_trace(go.Scatter(x=[start_s, end_s], y=[0, nyquist_khz], mode="markers", marker_opacity=0,
                             hoverinfo="skip", showlegend=False), row=1, col=1)
    if picture is not None:
        fig.add_layout_image(source=picture, xref="x", yref="y", x=start_s, y=nyquist_khz, sizex=end_s - start_s,
                             sizey=nyquist_khz, sizing="stretch", layer="below")
    if rows:
        scores = np.asarray(view.timeline_scores, dtype=float)
        strong = np.where(scores >= min_conf, scores, np.nan)
        hover = "%{y}<br>%{x:.1f} s<br>score %{z:.2f}<extra></extra>"
        if below == "fade":
            weak = np.where(scores < min_conf, scores, np.nan)
            fig.add_trace(go.Heatmap(x=view.timeline_edges, y=view.timeline_labels, z=weak, zmin=0, zmax=1,
                                     colorscale=[[0, "#f3f4f6"], [1, "#9ca3af"]], showscale=False,
                                     hovertemplate=hover.replace("score", "below min. confidence, score")),
                          row=2, col=1)
        fig.add_trace(go.Heatmap(x=view.timeline_edges, y=view.timeline_labels, z=strong, zmin=0, zmax=1,
                                 colorscale="Viridis", colorbar=dict(title="score", len=0.3, y=0, yanchor="bottom"),
                                 hovertemplate=hover), row=2, col=1)
        fig.update_yaxes(autorange="reversed", row=2, col=1)
    if view.calls is not None:  # each call's time-frequency box on the spectrogram
        shown = view.calls[(view.calls["end (s)"] >= start_s) & (view.calls["start (s)"] <= end_s)]
        for call in shown.head(500).itertuples(index=False):
            fig.add_shape(type="rect", x0=call[0], x1=call[1], y0=call[2], y1=call[3], line=dict(color=BOX_COLOUR,
                          width=1.5), row=1, col=1)
    fig.update_xaxes(range=[start_s, end_s], showgrid=False)
    fig.update_xaxes(title_text="time in the recording (s)", row=2, col=1)
    fig.update_yaxes(title_text="kHz", range=[0, nyquist_khz], showgrid=False, row=1, col=1)
    fig.update_layout(
        title=dict(text=f"{view.name} · {start_s:.1f}-{end_s:.1f} s of {view.duration_s:.1f} s", x=0.01),
        height=height, margin=dict(l=10, r=10, t=40, b=40),
        clickmode="event",
    )
    return fig


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


def detection_window(view: FileView, at_s: float) -> tuple[float, float]:
    """The analysis window starting at ``at_s`` with ``CONTEXT_S`` on each side."""
    return at_s - CONTEXT_S, at_s + view.window_s + CONTEXT_S


def clips_zip(run: Run, name: str, options: Options, species: list[str] | None = None) -> Path:
    """The windows of ``name`` scoring at least min_conf (of ``species`` if given) as a zip of short WAVs."""
    from rl_core.detection_filters import display_label
    from rl_core.exports import Clip, write_clips_zip

    flt = options.detection_filter()
    view = flt.view(run.results[name])
    table = view.top_k_table(run.top_k, options.min_conf)
    if species:
        table = table[table["scientific_name"].isin(species)]
    if table.empty:
        raise UserFacingError(f"{name}: no detection scores at least {options.min_conf:g}: lower the minimum "
                              "confidence to export clips")
    table = table.sort_values("score", ascending=False).head(MAX_CLIPS)
    clips = [Clip(run.paths[name], name, display_label(r.scientific_name, r.common_name).replace(" (", "_"),
                  r.start_s, r.end_s) for r in table.itertuples(index=False)]
    return write_clips_zip(clips, run.out / f"{Path(name).stem}_clips.zip", CONTEXT_S,
                           settings=options.export_settings(run.model, run.top_k, run.hop_s))


# --------------------------------------------------------------------------- Gradio adapters
FILTER_INPUTS_HELP = {
    "min_conf": "Detections scoring less are faded or hidden and left out of the downloads. BirdNET-Analyzer's "
                "default is 0.25; raise it (0.5-0.7) when you want few false alarms.",
    "sensitivity": "BirdNET-Analyzer's sensitivity: above 1 raises every score (more detections, more false "
                   "alarms), below 1 lowers them. 1 leaves the model's scores unchanged.",
    "overlap": "Seconds each analysis window overlaps the previous one (BirdNET windows are 3 s). More overlap: "
               "finer timing, longer run.",
}


def _state(run: Run | None, name: str | None) -> dict:
    return {"run": run.id if run else None, "file": name}


@dataclass
class Shown:
    """What one run looks like under one set of options: per-file views, the summary, downloads, the message."""

    files: dict[str, FileView]
    summary: pd.DataFrame
    downloads: list[str]
    message: str
    errors: list[str]


def render(run: Run, options: Options) -> Shown:
    """The tab's content for ``run`` under ``options`` (no model pass); the downloads are rewritten to match."""
    flt = options.detection_filter()
    files = {n: file_view(run, n, options, flt) for n in run.results}
    return Shown(files, summary_table(run, options, flt), write_exports(run, options, flt), status_message(run),
                 list(run.errors))


def _file_outputs(run: Run | None, view: FileView | None, options: Options) -> tuple:
    """species, removed (with its accordion label), figure, audio, position slider, calls."""
    if run is None or view is None:
        return (pd.DataFrame(columns=SPECIES_COLUMNS), pd.DataFrame(columns=REMOVED_COLUMNS),
                gr.update(label="Removed by the location filter"), view_figure(None),
                gr.update(value=None, label="Listen"), gr.update(value=0, maximum=1), gr.update(visible=False))
    start, end = 0.0, min(view.duration_s, VIEW_SECONDS)
    heard = listen(run, view.name, view, start, end, options)
    removed_label = (f"Removed by the location filter: {len(view.removed)} species found here are not expected "
                     "at this place and week" if len(view.removed) else "Removed by the location filter (none)")
    calls = gr.update(visible=view.calls is not None, value=view.calls)
    removed = _formatted(view.removed) if len(view.removed) else view.removed
    return (styled_species(view), removed, gr.update(label=removed_label), heard.figure,
            gr.update(value=heard.audio, label=f"Listen · {heard.caption}"),
            gr.update(value=0, maximum=max(int(view.duration_s), 1)), calls)


def _outputs(run: Run, options: Options, name: str | None = None) -> tuple:
    shown = render(run, options)
    names = list(shown.files)
    name = name if name in shown.files else (names[0] if names else None)
    return (
        shown.message, _formatted(shown.summary),
        gr.update(choices=names, value=name),
        *_file_outputs(run, shown.files.get(name), options),
        shown.downloads or None,
        _state(run, name),
    )


N_OUTPUTS = 12


def on_run(files, example, model_name, top_k, min_conf=0.25, sensitivity=1.0, overlap_s=0.0, lat=None,
           lon=None, date=None, location_threshold=0.03, species_list=None, language="en", below="fade",
           progress=gr.Progress()):
    try:
        options = options_from_inputs(min_conf, sensitivity, overlap_s, lat, lon, date, location_threshold,
                                      species_list, language, below)
        run = analyse(files, model_name, top_k, example=example or None, progress=progress, options=options)
        return _outputs(run, options)
    except Exception as exc:  # noqa: BLE001 - one message in the status line; the panels keep what they show
        return (f"⚠️ {_scrub(describe_error(exc))}", *[gr.skip()] * (N_OUTPUTS - 1))
    finally:
        release_memory()


def on_refilter(state, min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below):
    """Re-draw the stored results under new filter settings (no model pass)."""
    run = _run((state or {}).get("run"))
    if run is None:
        return (gr.skip(),) * N_OUTPUTS
    try:
        options = options_from_inputs(min_conf, sensitivity, 0.0, lat, lon, date, location_threshold,
                                      species_list, language, below)
        return _outputs(run, options, (state or {}).get("file"))
    except Exception as exc:  # noqa: BLE001
        return (f"⚠️ {_scrub(describe_error(exc))}", *[gr.skip()] * (N_OUTPUTS - 1))


def on_pick_file(state, name, min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below):
    filters = (min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below)
    run = _run((state or {}).get("run"))
    if run is None or name not in run.results:
        return (gr.skip(),) * 8
    options = options_from_inputs(filters[0], filters[1], 0.0, *filters[2:])
    return (*_file_outputs(run, file_view(run, name, options), options), _state(run, name))


def _listen_outputs(state, start_s: float, end_s: float, filters) -> tuple:
    run = _run((state or {}).get("run"))
    name = (state or {}).get("file")
    if run is None or name not in run.results:
        return gr.skip(), gr.skip(), gr.skip()
    options = options_from_inputs(filters[0], filters[1], 0.0, *filters[2:])
    view = file_view(run, name, options)
    heard = listen(run, name, view, start_s, end_s, options)
    return heard.figure, gr.update(value=heard.audio, label=f"Listen · {heard.caption}"), gr.skip()


def on_species_select(state, table,
        min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below, evt: gr.SelectData):
    """A click on a species row plays its best window with a second of context."""
    filters = (min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below)
    if evt is None or table is None or not len(table):
        return gr.skip(), gr.skip(), gr.skip()
    row = table.iloc[evt.index[0]]
    at = float(row["at (s)"])
    run = _run((state or {}).get("run"))
    name = (state or {}).get("file")
    if run is None or name not in run.results:
        return gr.skip(), gr.skip(), gr.skip()
    window = float(run.results[name].ends[0] - run.results[name].starts[0])
    fig, audio, _ = _listen_outputs(state, at - CONTEXT_S, at + window + CONTEXT_S, filters)
    return fig, audio, gr.update(value=at)


def on_timeline_click(state, clicked,
        min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below):
    """A click on a timeline cell (sent by the page's script as "seconds|label") plays that window."""
    filters = (min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below)
    try:
        at = float(str(clicked).split("|")[0])
    except ValueError:
        return gr.skip(), gr.skip(), gr.skip()
    run = _run((state or {}).get("run"))
    name = (state or {}).get("file")
    if run is None or name not in run.results:
        return gr.skip(), gr.skip(), gr.skip()
    result = run.results[name]
    w = int(np.searchsorted(result.starts, at, side="right") - 1)
    w = min(max(w, 0), result.num_windows - 1)
    start, end = float(result.starts[w]), float(result.ends[w])
    fig, audio, _ = _listen_outputs(state, start - CONTEXT_S, end + CONTEXT_S, filters)
    return fig, audio, gr.update(value=start)


def on_position(state, position,
        min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below):
    """The position slider: the player and spectrogram show VIEW_SECONDS from there."""
    filters = (min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below)
    return _listen_outputs(state, float(position or 0), float(position or 0) + VIEW_SECONDS, filters)[:2]


def on_clips(state, min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below):
    filters = (min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below)
    run = _run((state or {}).get("run"))
    name = (state or {}).get("file")
    if run is None or name not in run.results:
        return gr.skip(), "Analyse a recording first."
    try:
        options = options_from_inputs(filters[0], filters[1], 0.0, *filters[2:])
        return gr.update(value=str(clips_zip(run, name, options)), visible=True), ""
    except Exception as exc:  # noqa: BLE001
        return gr.skip(), f"⚠️ {_scrub(describe_error(exc))}"


# the page's script: a click on a timeline cell writes "seconds|label" into a hidden box and fires its input event
TIMELINE_CLICK_JS = """
() => {
  const attach = (tries) => {
    const plot = document.querySelector('#inf-view .js-plotly-plot');
    if (!plot || !plot.on) { if (tries > 0) setTimeout(() => attach(tries - 1), 200); return; }
    if (plot._rlClick) return;
    plot._rlClick = true;
    plot.on('plotly_click', (data) => {
      const point = data.points && data.points[0];
      if (!point || point.data.type !== 'heatmap') return;
      const box = document.querySelector('#inf-jump textarea, #inf-jump input');
      box.value = `${point.x}|${point.y}|${Date.now()}`;
      box.dispatchEvent(new Event('input', {bubbles: true}));
    });
  };
  attach(25);
}
"""


def build() -> None:
    from rl_core.detection_filters import LANGUAGES, available_languages

    examples = [p.name for p in example_recordings()]
    gr.Markdown(
        "**Find the species in your recordings.** Drop one or more recordings (WAV, FLAC, OGG, MP3 … any sample "
        f"rate, up to {SETTINGS.max_file_size_mb:g} MB each) or pick a bundled example, then press **Analyse**. "
        "The model scores every 3-s window: a score is the model's confidence (0-1) that the species calls in "
        "that window. Click a row of the species table or a cell of the timeline to hear that moment."
    )
    with gr.Row():
        with gr.Column(scale=3):
            files = gr.File(file_count="multiple", label="Recordings", elem_id="inf-files", height=150)
            example = gr.Dropdown([("—", "")] + [(n, n) for n in examples], value="", label="…or a bundled example",
                                  elem_id="inf-example")
        with gr.Column(scale=2):
            model = gr.Dropdown(model_choices(), value=default_model(), label="Model", elem_id="inf-model",
                                info="Only models marked 'species names · ready' name species on this machine; "
                                     "'embeddings only' models give vectors for the embedding map.")
            top_k = gr.Slider(1, 20, value=5, step=1, label="Species per file",
                              info="How many of the best-scoring species each file lists.")
            with gr.Row():
                run = gr.Button("Analyse", variant="primary", elem_id="inf-run", scale=3)
                clear = gr.ClearButton(value="Clear", scale=1)
    with gr.Accordion("Filters: confidence, location and season, species list, language", open=True):
        with gr.Row():
            min_conf = gr.Slider(0.01, 0.99, value=0.25, step=0.01, label="Minimum confidence",
                                 info=FILTER_INPUTS_HELP["min_conf"], elem_id="inf-min-conf")
            sensitivity = gr.Slider(0.5, 1.5, value=1.0, step=0.05, label="Sensitivity",
                                    info=FILTER_INPUTS_HELP["sensitivity"], elem_id="inf-sensitivity")
            overlap = gr.Slider(0.0, 2.5, value=0.0, step=0.5, label="Overlap (s)", info=FILTER_INPUTS_HELP["overlap"],
                                elem_id="inf-overlap")
            below = gr.Radio(BELOW_CHOICES, value="fade", label="Scores below the minimum", elem_id="inf-below")
        with gr.Row():
            lat = gr.Textbox("", label="Latitude", placeholder="e.g. 42.45", elem_id="inf-lat",
                             info="Decimal degrees, north positive. Empty: no location filter.")
            lon = gr.Textbox("", label="Longitude", placeholder="e.g. -76.48", elem_id="inf-lon",
                             info="Decimal degrees, east positive.")
            date = gr.Textbox("", label="Recording date", placeholder="YYYY-MM-DD", elem_id="inf-date",
                              info="Gives BirdNET's week (4 per month). Empty: the whole year.")
            location_threshold = gr.Slider(0.01, 0.99, value=0.03, step=0.01, label="Occurrence threshold",
                                           info="Species the location model gives less than this probability of "
                                                "occurring there that week are removed (BirdNET-Analyzer: 0.03).",
                                           elem_id="inf-loc-thr")
        with gr.Row():
            species_list = gr.File(label="Custom species list (.txt, one scientific name per line)",
                                   file_types=[".txt", ".csv"], type="filepath", elem_id="inf-slist", height=120)
            language = gr.Dropdown([(LANGUAGES.get(c, c), c) for c in available_languages()], value="en",
                                   label="Language of common names", elem_id="inf-language")
        gr.Markdown("Type the coordinates of the recording site (a map picker needs online map tiles, which this "
                    "app does not load). The location filter uses BirdNET's own range model, offline.",
                    elem_classes="rl-note")
    status = gr.Markdown(elem_id="inf-status")
    summary = gr.Dataframe(headers=SUMMARY_COLUMNS, interactive=False, label="All files", elem_id="inf-summary",
                           wrap=True, column_widths=["26%", "11%", "9%", "30%", "12%", "12%"])
    pick = gr.Dropdown([], label="Show file", elem_id="inf-pick")
    with gr.Row():
        with gr.Column(scale=3):
            species = gr.Dataframe(headers=SPECIES_COLUMNS, interactive=False, elem_id="inf-species", wrap=True,
                                   label="Species (click a row to hear its best window)",
                                   column_widths=["7%", "22%", "22%", "11%", "12%", "10%", "16%"])
            with gr.Accordion("Removed by the location filter", open=False, elem_id="inf-removed-box") as removed_box:
                removed = gr.Dataframe(headers=REMOVED_COLUMNS, interactive=False, elem_id="inf-removed", wrap=True)
            # BatDetect2 (another helper): one row per call with its time/frequency box
            calls = gr.Dataframe(interactive=False, label="Calls", elem_id="inf-calls", visible=False, wrap=True)
        with gr.Column(scale=2):
            audio = gr.Audio(type="filepath", label="Listen", interactive=False, elem_id="inf-audio")
            position = gr.Slider(0, 1, value=0, step=1, label="Position in the file (s)", elem_id="inf-position",
                                 info=f"Moves the player and spectrogram ({VIEW_SECONDS:g} s from here).")
            clips_button = gr.Button("Download clips of this file's detections (zip of WAVs)", size="sm",
                                     elem_id="inf-clips-run")
            clips = gr.File(label="Clips", interactive=False, elem_id="inf-clips", visible=False)
            clips_note = gr.Markdown(elem_id="inf-clips-note")
    figure = gr.Plot(label="Spectrogram and detections over time", elem_id="inf-view")
    jump = gr.Textbox(elem_id="inf-jump", elem_classes="rl-hidden", show_label=False, container=False)
    downloads = gr.File(label="Downloads: predictions CSV, Raven selection tables, Audacity labels, embeddings "
                              "(.npz), settings", file_count="multiple", interactive=False, elem_id="inf-downloads")
    state = gr.State({})
    filters = [min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below]
    outputs = [status, summary, pick, species, removed, removed_box, figure, audio, position, calls, downloads, state]
    clear.add([files, status, summary, pick, species, removed, figure, audio, downloads])
    run.click(
        on_run, [files, example, model, top_k, min_conf, sensitivity, overlap, lat, lon, date, location_threshold,
                 species_list, language, below],
        outputs, api_name="predict", concurrency_id=model_concurrency_id(), concurrency_limit=SETTINGS.model_workers,
        show_progress_on=[status],
    )
    # sliders: .change also fires when a number is typed into their box; always_last drops stale drags
    gr.on([min_conf.change, sensitivity.change, below.change, lat.submit, lon.submit, lat.blur, lon.blur,
           date.submit, date.blur, location_threshold.change, species_list.change, language.change],
          on_refilter, [state, *filters], outputs, api_visibility="private", show_progress="hidden",
          trigger_mode="always_last")
    pick.input(on_pick_file, [state, pick, *filters],
               [species, removed, removed_box, figure, audio, position, calls, state], api_visibility="private",
               show_progress="hidden")
    species.select(on_species_select, [state, species, *filters], [figure, audio, position],
                   api_visibility="private", show_progress="hidden")
    jump.change(on_timeline_click, [state, jump, *filters], [figure, audio, position], api_visibility="private",
               show_progress="hidden")
    # input: the user's drag or typed number (not the value set by a click on a detection)
    position.input(on_position, [state, position, *filters], [figure, audio], api_visibility="private",
                   show_progress="hidden", trigger_mode="always_last")
    clips_button.click(on_clips, [state, *filters], [clips, clips_note], api_visibility="private")
    figure.change(None, js=TIMELINE_CLICK_JS)
