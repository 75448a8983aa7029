"""What the inference tab shows, without Gradio: the run kept on the server, filters, tables and downloads (the
view figure, the player and the clips are in ``ui.inference_figure``).

``analyse`` runs the model once per request and keeps the results on the server (``_RUNS``); ``render`` turns
them into what the tab shows for the current filter settings (``Options``), so changing the minimum confidence,
the location or the language re-draws at once without a second model pass. Filters and names come from
``rl_core.detection_filters`` (the CLI's), exports from ``rl_core.exports``. A file that cannot be read is
named in the status line while the others are analysed. The Gradio adapters are in ``ui.inference``.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rl_core.errors import RLCoreError
from ui.common import (
    RequestCancelled,
    UserFacingError,
    analysis_limits,
    check_file_size,
    describe_error,
    display_name,
    example_recordings,
    get_model,
    model_infos,
    model_slot,
    hold_output_dir,
    new_output_dir,
    release_output_dir,
    progress_adapter,
)

log = logging.getLogger(__name__)

TIMELINE_SPECIES = 10
#: best classes kept per window (rl_core's keep_top): a long file's full (windows x classes) score matrix would
#: hold hundreds of MB; a class outside a window's best 50 counts as 0 there in means and the timeline
KEPT_SCORES = 50
#: seconds of audio around a clicked detection (before and after its window)
CONTEXT_S = 1.0
#: what the player and spectrogram show when no detection is clicked
VIEW_SECONDS = 30.0
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
    #: your classifier (``ui.inference_classifier``) and each file's windows scored by it
    classifier: Any = None
    custom: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: the overlap of this run's windows (the re-drawing handlers know only the filters)
    overlap_s: float = 0.0

    def export_settings(self, options: Options) -> dict[str, Any]:
        settings = {**options.export_settings(self.model, self.top_k, self.hop_s), "overlap_s": self.overlap_s}
        if self.classifier is not None:
            settings["classifier"] = f"{self.classifier.name} ({', '.join(self.classifier.classes)})"
        return settings


_RUNS: OrderedDict[str, Run] = OrderedDict()
_RUNS_LOCK = threading.Lock()
_MAX_RUNS = 8


def _keep(run: Run) -> None:
    """Keep ``run`` (its output folder stays held: listening, clips and downloads write there later)."""
    with _RUNS_LOCK:
        _RUNS[run.id] = run
        while len(_RUNS) > _MAX_RUNS:
            release_output_dir(_RUNS.popitem(last=False)[1].out)


def get_run(run_id: str | None) -> Run | None:
    with _RUNS_LOCK:
        return _RUNS.get(run_id or "")


# --------------------------------------------------------------------------- models
def scrub(text: str) -> str:
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
        raise UserFacingError(f"{scrub(str(exc))} Meanwhile choose a model marked 'ready' (birdnet_v2_4 gives "
                              "species names).") from None
    try:
        return get_model(name)
    except Exception as exc:  # noqa: BLE001 - one sentence, never a traceback or a URL
        raise UserFacingError(scrub(describe_error(exc, f"model {name} could not be loaded"))) from None


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
    classifier_files: Any = None,
) -> Run:
    """Run ``model_name`` on every file once; results are kept for ``render``. Per-file problems go to ``errors``.
    ``classifier_files``: your classifier's .safetensors and .yaml, applied to each file's window embeddings."""
    from ui.inference_classifier import classifier_from_uploads

    options = options or Options()
    options.detection_filter()  # bad settings fail before the model pass
    paths = resolve_inputs(files, example)
    classifier = classifier_from_uploads(classifier_files, model_name)  # another backbone's: refused before loading
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
    out = new_output_dir("inference")
    hold_output_dir(out)  # released when the run is dropped (see _keep), or now if the request fails
    try:
        return _analyse_into(Run(model=model_name, top_k=top_k, hop_s=hop_s, out=out, classifier=classifier,
                                 overlap_s=options.overlap_s), model, paths, report)
    except BaseException:
        release_output_dir(out)
        raise


def _analyse_into(run: Run, model: Any, paths: list[Path], report: Any) -> Run:
    """The model pass of :func:`analyse` over ``paths``; the run is kept on the server when it ends."""
    from rl_core.audio import audio_info
    from rl_core.inference import analyse_recording, unique_names
    from ui.inference_classifier import score_files

    hop_s, top_k = run.hop_s, run.top_k
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
            run.errors.append(scrub(describe_error(exc, name)))
    run.custom = score_files(run.classifier, run.results)
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
    custom = run.custom.get(name)  # your classifier's classes: below the model's, not filtered by place or list
    if not result.has_scores and custom is None:
        return FileView(name, float(result.duration_s), window_s, pd.DataFrame(columns=SPECIES_COLUMNS), [],
                        pd.DataFrame(columns=REMOVED_COLUMNS), [], [], np.zeros((0, 0)), calls)
    sources = ([(flt.view(result), run.top_k)] if result.has_scores else []) + (
        [(custom, len(custom.labels))] if custom is not None else [])
    species = pd.concat([species_table(r, k, options.min_conf) for r, k in sources], ignore_index=True)
    weak = (species["max score"] < options.min_conf).tolist()
    timelines = [r.timeline(TIMELINE_SPECIES) for r, _k in sources]
    timeline = timelines[0]._replace(labels=[t for tl in timelines for t in tl.labels],
                                     scores=np.concatenate([tl.scores for tl in timelines]))
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


def formatted(frame: pd.DataFrame, weak: list[bool] | None = None):
    """Scores with 3 decimals (not "1.000000" cut into two lines); rows in ``weak`` in grey italics."""
    style = frame.style.format({c: f for c, f in SCORE_FORMAT.items() if c in frame.columns}, na_rep="")
    if weak is not None and any(weak):
        style = style.apply(lambda row: [WEAK_STYLE if weak[row.name] else ""] * len(row), axis=1)
    return style


def styled_species(view: FileView | None):
    """The species table, rows under the minimum confidence in grey italics."""
    if view is None or view.species.empty:
        return pd.DataFrame(columns=SPECIES_COLUMNS)
    return formatted(view.species, view.weak)


def summary_table(run: Run, options: Options, flt: Any) -> pd.DataFrame:
    rows = []
    for name, result in run.results.items():
        top, best, count = "", None, 0
        if result.has_scores or name in run.custom:
            view = flt.view(result) if result.has_scores else run.custom[name]
            summary = view.file_summary(1, threshold=options.min_conf)
            if len(summary) and summary["max_score"].iloc[0] > 0:
                top = summary["common_name"].iloc[0] or summary["scientific_name"].iloc[0]
                top = f"{top} ({summary['scientific_name'].iloc[0]})" if top != summary["scientific_name"].iloc[0] else top
                best = round(float(summary["max_score"].iloc[0]), 4)
            count = len(view.top_k_table(run.top_k, options.min_conf))
        rows.append([name, round(float(result.duration_s), 2), result.num_windows, top, best, count])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def status_message(run: Run) -> str:
    done = f"Analysed {len(run.results)} file(s) with **{run.model}**."
    if run.classifier is not None:
        done += (f" Your classifier **{run.classifier.name}** scored every window for "
                 f"{', '.join(run.classifier.classes)} (rows marked 'your classifier: {run.classifier.name}').")
    if run.renamed:
        done += f" Uploads sharing a name are told apart in every output: {'; '.join(run.renamed)}."
    if not run.errors:
        return done
    problems = "\n".join(f"- ⚠️ {e}" for e in run.errors)
    return f"{done}\n\n**{len(run.errors)} file(s) could not be analysed:**\n{problems}"


@dataclass
class Shown:
    """What one run looks like under one set of options: per-file views, the summary, the message."""

    files: dict[str, FileView]
    summary: pd.DataFrame
    message: str
    errors: list[str]


def render(run: Run, options: Options) -> Shown:
    """The tab's content for ``run`` under ``options`` (no model pass; downloads: ``ui.inference_downloads``)."""
    flt = options.detection_filter()
    files = {n: file_view(run, n, options, flt) for n in run.results}
    return Shown(files, summary_table(run, options, flt), status_message(run), list(run.errors))
