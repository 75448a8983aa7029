"""Projects tab: analyse a server-side folder (under --data-root) or uploaded files into a resumable project,
watch its progress (the job belongs to the server and survives closing the page), browse filtered detections
and download every export.

Handlers are plain functions (tests call them); the analysis, filters and exports are rl_core's.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from ui.common import (UserFacingError, default_model, describe_error, held_output_dir, model_choices,
                       request_scratch_dir)

log = logging.getLogger(__name__)

BROWSE_ROWS = 1000
HEATMAP_SPECIES = 25
DETECTION_COLUMNS = ["file", "start_s", "end_s", "scientific_name", "common_name", "score", "folder"]
EXPORT_CHOICES = ["CSV", "Raven", "Audacity", "Kaleidoscope", "Parquet", "Summaries"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class ProjectSettings:
    """Where projects live and which server folders may be analysed (set by app.py's flags)."""

    data_root: Path | None = None
    projects_dir: Path = Path.home() / ".local" / "share" / "rl_core" / "projects"
    workers: int | None = None


PROJECTS = ProjectSettings()


def configure(data_root: str | Path | None = None, projects_dir: str | Path | None = None,
              workers: int | None = None) -> ProjectSettings:
    PROJECTS.data_root = Path(data_root).expanduser().resolve() if data_root else None
    if PROJECTS.data_root is not None and not PROJECTS.data_root.is_dir():
        raise SystemExit(f"--data-root {data_root}: no such folder")
    if projects_dir:
        PROJECTS.projects_dir = Path(projects_dir).expanduser().absolute()
    PROJECTS.workers = workers
    return PROJECTS


def data_root_help() -> str:
    if PROJECTS.data_root is None:
        return ("**Server folders are off.** To analyse folders that are already on this server (an SD-card copy, "
                "a season of recorders), start the app with `python app.py --data-root /path/to/recordings`; "
                "only folders under it can be chosen. Without it, upload files or a .zip below.")
    return f"Folders under **{PROJECTS.data_root}** can be analysed (give a path relative to it)."


def resolve_data_folder(text: str) -> Path:
    """A folder under --data-root; anything outside it (``..``, absolute paths elsewhere, symlinks) is refused."""
    root = PROJECTS.data_root
    if root is None:
        raise UserFacingError("server folders are off: start the app with --data-root DIR, or upload files")
    text = (text or "").strip()
    if not text:
        raise UserFacingError("choose a folder under the data root")
    candidate = Path(text)
    target = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not target.is_relative_to(root):
        raise UserFacingError(f"'{text}' is outside the data root {root} (through '..', an absolute path or a "
                              "symlink); choose a folder under it")
    if not target.is_dir():
        raise UserFacingError(f"'{text}' is not a folder under the data root {root}")
    return target


def data_folders(depth: int = 2) -> list[str]:
    """Folders under --data-root (two levels), for the folder picker."""
    root = PROJECTS.data_root
    if root is None:
        return []
    found = ["."]
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_dir() and len(rel.parts) <= depth and not any(p.startswith(".") for p in rel.parts):
            if path.resolve().is_relative_to(root):
                found.append(rel.as_posix())
    return found


def project_dir(name: str) -> Path:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise UserFacingError("a project name is 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit")
    return PROJECTS.projects_dir / name


def list_projects() -> list[str]:
    folder = PROJECTS.projects_dir
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "project.duckdb").is_file() or (p / "uploads").is_dir())


def _open(name: str):
    from rl_core.project import ProjectStore
    from rl_core.project.jobs import JOBS

    folder = project_dir(name)
    # while this server writes the project, read it through the same DuckDB instance
    return ProjectStore(folder, read_only=not JOBS.is_running(folder), shared=JOBS.is_running(folder))


def _store_uploads(folder: Path, uploads: list[str] | None) -> Path | None:
    """Copy uploaded recordings (and the contents of uploaded zips, folders kept) into ``folder/uploads``."""
    if not uploads:
        return None
    from rl_core.audio import SUPPORTED_EXTENSIONS
    from ui.embedding_map import extract_zip

    target = folder / "uploads"
    target.mkdir(parents=True, exist_ok=True)
    for upload in uploads:
        path = Path(upload)
        if path.suffix.lower() == ".zip":
            with request_scratch_dir("project-zip") as staging:  # held while unpacking, removed at the end
                for item in extract_zip(path, staging):  # the one safe unzip (zip slip, bombs, limits)
                    destination = target / item.name
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(item.path), destination)
        elif path.suffix.lower() in SUPPORTED_EXTENSIONS:
            shutil.copyfile(path, target / path.name)
        else:
            raise UserFacingError(f"{path.name} is neither a recording nor a .zip of recordings")
    return target


# --------------------------------------------------------------------------- analysis
def start_analysis(name: str, folder: str, uploads: list[str] | None, model: str, hop: float | None,
                   workers: int | None) -> str:
    """Start (or resume) the analysis of a project in the background; returns a status line."""
    from rl_core.project import RunSettings
    from rl_core.project.jobs import JOBS

    target = project_dir(name)
    dirs = []
    if folder and str(folder).strip():
        dirs.append(resolve_data_folder(folder))
    uploaded = _store_uploads(target, uploads)
    if uploaded is not None:
        dirs.append(uploaded)
    elif (target / "uploads").is_dir():
        dirs.append(target / "uploads")
    if not dirs:
        raise UserFacingError("choose a folder under the data root or upload recordings (or a .zip) first")
    settings = RunSettings(model=model or default_model(need_classifier=True), hop_s=optional_number(hop, "hop"))
    JOBS.start(target, dirs, settings, workers=int(workers) if workers else PROJECTS.workers, confine=True)
    return f"Analysis of **{name}** started ({', '.join(str(d) for d in dirs)})."


def stop_analysis(name: str) -> str:
    from rl_core.project.jobs import JOBS

    state = JOBS.stop(project_dir(name))
    if state is None or state.state not in ("stopping",):
        return f"No analysis of {name} is running."
    return "Stopping after the files in progress; finished files are kept (press Start to resume)."


def progress_html(fraction: float, message: str, state: str) -> str:
    import html

    percent = max(0.0, min(1.0, float(fraction))) * 100
    return (f'<div id="prj-progress-box" data-state="{state}"><progress id="prj-progress" max="100" '
            f'value="{percent:.1f}" style="width:100%;height:1.4em"></progress>'
            f'<div id="prj-progress-text">{state}: {percent:.0f}% · {html.escape(message)}</div></div>')


def job_status(name: str) -> tuple[str, str]:
    """(progress bar HTML, state) of the project's background job, or of its stored analysis when none ran here."""
    from rl_core.project.jobs import JOBS

    if not name:
        return progress_html(0, "choose or name a project", "idle"), "idle"
    folder = project_dir(name)
    state = JOBS.status(folder)
    if state is not None:
        return progress_html(state.fraction, state.message, state.state), state.state
    if (folder / "project.duckdb").is_file():
        try:
            with _open(name) as store:
                runs = store.runs()
        except Exception as exc:  # noqa: BLE001 - e.g. analysed by a CLI process right now
            return progress_html(0, describe_error(exc), "busy"), "busy"
        if len(runs):
            last = runs.iloc[-1]
            return progress_html(1.0, f"{int(last.files_done)} file(s) analysed, {int(last.files_failed)} failed, "
                                      f"{last.audio_hours:.2f} h of audio ({last.model})", "stored"), "stored"
    return progress_html(0, "not analysed yet", "idle"), "idle"


# --------------------------------------------------------------------------- browsing
def optional_number(value: Any, what: str) -> float | None:
    """A number typed into a text box; empty means "not set"."""
    if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
        return None
    try:
        return float(str(value).strip().replace(",", "."))
    except ValueError:
        raise UserFacingError(f"{what} must be a number, got '{value}'") from None


def build_filter(min_conf: float, sensitivity: float, lat: Any, lon: Any, week: Any, threshold: float,
                 species_file: str | None, language: str, merge: bool):
    from rl_core.detection_filters import DetectionFilter, read_species_list

    lat, lon = optional_number(lat, "latitude"), optional_number(lon, "longitude")
    week_value = optional_number(week, "week")
    species = read_species_list(species_file) if species_file else None
    return DetectionFilter(min_conf=float(min_conf), sensitivity=float(sensitivity), lat=lat, lon=lon,
                           week=int(week_value) if week_value is not None and lat is not None else None,
                           location_threshold=float(threshold), species_list=species, language=language or "en",
                           merge_consecutive=None if merge else 1)


def heatmap_figure(frame: pd.DataFrame) -> go.Figure:
    """Detections per species (rows) and day (columns): the season at a glance."""
    from rl_core.project.exports import summaries

    fig = go.Figure()
    per_day = summaries(frame)["per_species_day"] if len(frame) else pd.DataFrame()
    if per_day.empty:
        fig.add_annotation(text="No detections with these filters", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
    else:
        top = per_day.groupby("common_name")["detections"].sum().sort_values(ascending=False).index[:HEATMAP_SPECIES]
        table = per_day[per_day.common_name.isin(top)].pivot_table(index="common_name", columns="date",
                                                                  values="detections", aggfunc="sum", fill_value=0)
        table = table.loc[[s for s in top if s in table.index]]
        fig.add_trace(go.Heatmap(z=table.values, x=list(table.columns), y=list(table.index), colorscale="Viridis",
                                 colorbar=dict(title="detections"),
                                 hovertemplate="%{y}<br>%{x}<br>%{z} detections<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(type="category")
    fig.update_layout(title="Species × date", height=180 + 22 * min(HEATMAP_SPECIES, max(1, len(per_day))),
                      template="plotly_white", margin=dict(l=10, r=10, t=50, b=40), xaxis_title="date")
    return fig


def hour_figure(frame: pd.DataFrame) -> go.Figure:
    """In which hours of the day each species was detected (number of detections per hour)."""
    from rl_core.project.exports import summaries

    fig = go.Figure()
    per_hour = summaries(frame)["per_species_hour"] if len(frame) else pd.DataFrame()
    per_hour = per_hour[per_hour.hour != "unknown"] if len(per_hour) else per_hour
    if per_hour.empty:
        fig.add_annotation(text="No detections with a known time of day (recorder file names give it)",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    else:
        top = per_hour.groupby("common_name")["detections"].sum().sort_values(ascending=False).index[:HEATMAP_SPECIES]
        table = per_hour[per_hour.common_name.isin(top)].assign(hour=lambda t: t.hour.astype(int)).pivot_table(
            index="common_name", columns="hour", values="detections", aggfunc="sum", fill_value=0)
        table = table.reindex(columns=range(24), fill_value=0).loc[[s for s in top if s in table.index]]
        fig.add_trace(go.Heatmap(z=table.values, x=list(range(24)), y=list(table.index), colorscale="Blues",
                                 colorbar=dict(title="detections"),
                                 hovertemplate="%{y}<br>%{x}:00<br>%{z} detections<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
    fig.update_layout(title="Presence per hour of day", xaxis=dict(title="hour", dtick=2, range=[-0.5, 23.5]),
                      height=180 + 22 * min(HEATMAP_SPECIES, max(1, len(per_hour))), template="plotly_white",
                      margin=dict(l=10, r=10, t=50, b=40))
    return fig


def browse(name: str, folders: list[str] | None, min_conf: float, sensitivity: float, lat: Any, lon: Any,
           week: Any, threshold: float, species_file: str | None, language: str, merge: bool):
    """(message, detections table, species x date heatmap, per-hour plot, removed-by-location table)."""
    from rl_core.project.exports import project_detections

    flt = build_filter(min_conf, sensitivity, lat, lon, week, threshold, species_file, language, merge)
    with _open(name) as store:
        run = store.default_run()
        frame = project_detections(store, flt, run, folders=folders or None)
        removed = pd.DataFrame(columns=["scientific_name", "common_name", "occurrence", "detections"])
        if flt.uses_location:
            from rl_core.project.exports import raw_threshold

            dropped = flt.removed_by_location(store.window_scores(run, raw_threshold(flt), folders or None))
            if len(dropped):
                removed = (dropped.groupby(["scientific_name", "common_name"], as_index=False)
                           .agg(occurrence=("occurrence", "first"), detections=("score", "size"))
                           .sort_values("detections", ascending=False))
                removed["occurrence"] = removed["occurrence"].round(4)
        settings = store.run_settings(run)
    species = frame["scientific_name"].nunique()
    message = (f"**{len(frame)}** detection(s) of **{species}** species/classes with {settings['model']} "
               f"(min_conf {flt.min_conf:g}, sensitivity {flt.sensitivity:g}"
               + (f", location {flt.lat:g}, {flt.lon:g}, week {flt.week}: {len(removed)} species removed"
                  if flt.uses_location else "") + ")")
    if len(frame) > BROWSE_ROWS:
        message += f"; the table shows the first {BROWSE_ROWS} (exports hold all)"
    table = frame[DETECTION_COLUMNS].head(BROWSE_ROWS).copy()
    table["score"] = table["score"].astype(float).round(4)  # float32 scores would print 0.9739000201...
    table[["start_s", "end_s"]] = table[["start_s", "end_s"]].round(3)
    return message, table, heatmap_figure(frame), hour_figure(frame), removed


def export(name: str, formats: list[str], folders: list[str] | None, min_conf: float, sensitivity: float, lat: Any,
           lon: Any, week: Any, threshold: float, species_file: str | None, language: str, merge: bool) -> list[str]:
    """Files to download: CSV, Raven (combined table + zip of one table per file), Audacity zip, ..."""
    from rl_core.project.exports import export_project, zip_folder

    chosen = [f.lower() for f in (formats or [])]
    if not chosen:
        raise UserFacingError("tick at least one export format")
    flt = build_filter(min_conf, sensitivity, lat, lon, week, threshold, species_file, language, merge)
    files: list[Path] = []
    with held_output_dir("project-export") as out:  # a large export takes minutes
        with _open(name) as store:
            written = export_project(store, out / "export", formats=chosen, flt=flt, folders=folders or None)
        for fmt, paths in written.items():
            if fmt in ("csv", "kaleidoscope", "parquet"):
                files += paths
            elif fmt == "raven":
                files.append(next(p for p in paths if p.name == "combined.selection.table.txt"))
                files.append(zip_folder(out / "export" / "raven", out / f"{name}_raven_tables.zip"))
            else:
                files.append(zip_folder(out / "export" / fmt, out / f"{name}_{fmt}.zip"))
    return [str(p) for p in files]


def project_info(name: str) -> tuple[list[str], pd.DataFrame]:
    """(folders of the project's latest run, its failures) for the pickers and the failures table."""
    if not name or not (project_dir(name) / "project.duckdb").is_file():
        return [], pd.DataFrame(columns=["path", "error_type", "reason"])
    with _open(name) as store:
        try:
            run = store.default_run()
        except Exception:  # noqa: BLE001 - no run yet
            return [], pd.DataFrame(columns=["path", "error_type", "reason"])
        return store.folders(run), store.failures(run)[["path", "error_type", "reason"]]


# --------------------------------------------------------------------------- Gradio wiring
def _ui_error(exc: BaseException):
    return gr.Error(describe_error(exc), print_exception=False)


def on_start(name, folder, uploads, model, hop, workers):
    try:
        message = start_analysis(name, folder, uploads, model, hop, workers)
    except Exception as exc:  # noqa: BLE001 - shown to the user
        raise _ui_error(exc) from None
    return message, gr.update(choices=list_projects(), value=name)


def on_stop(name):
    try:
        return stop_analysis(name)
    except Exception as exc:  # noqa: BLE001
        raise _ui_error(exc) from None


def on_poll(name):
    try:
        return job_status(name)[0]
    except Exception as exc:  # noqa: BLE001
        return progress_html(0, describe_error(exc), "error")


def on_project(name):
    try:
        folders, failures = project_info(name)
    except Exception as exc:  # noqa: BLE001
        raise _ui_error(exc) from None
    return gr.update(choices=folders, value=[]), failures, job_status(name)[0] if name else ""


def on_load():
    """Reattach: select a project whose analysis is running on the server (or the first one)."""
    from rl_core.project.jobs import JOBS

    projects = list_projects()
    running = [p for p in projects if JOBS.is_running(project_dir(p))]
    value = running[0] if running else (projects[0] if projects else None)
    return gr.update(choices=projects, value=value), gr.update(choices=data_folders())


def on_browse(*args):
    try:
        return browse(*args)
    except Exception as exc:  # noqa: BLE001
        raise _ui_error(exc) from None


def on_export(*args):
    try:
        return export(*args)
    except Exception as exc:  # noqa: BLE001
        raise _ui_error(exc) from None


def build(demo: gr.Blocks) -> None:
    from rl_core.detection_filters import LANGUAGES, available_languages

    gr.Markdown(
        "A **project** is a whole archive (an SD card, a season of recorders) analysed once into a database on "
        "this server: resumable, in parallel, with BirdNET-Analyzer's filters applied when you browse or export. "
        "The analysis runs on the server: close this page and come back, it goes on.")
    gr.Markdown(data_root_help(), elem_id="prj-root-help")
    with gr.Row():
        with gr.Column(scale=3):
            project = gr.Dropdown(list_projects(), value=None, allow_custom_value=True,
                                  label="Project (choose, or type a new name)", elem_id="prj-name")
            folder = gr.Dropdown(data_folders(), value=None, allow_custom_value=True,
                                 label="Folder under the data root", elem_id="prj-folder",
                                 interactive=PROJECTS.data_root is not None)
            uploads = gr.File(file_count="multiple", label="…or upload recordings / a .zip into the project",
                              elem_id="prj-uploads", height=120)
        with gr.Column(scale=2):
            model = gr.Dropdown(model_choices(need_classifier=True), value=default_model(need_classifier=True),
                                label="Model", elem_id="prj-model")
            with gr.Row():
                hop = gr.Textbox("", label="Hop (s)", placeholder="empty = window length (no overlap)", elem_id="prj-hop")
                workers = gr.Number(value=PROJECTS.workers, label="Workers (empty = one per core)", precision=0,
                                    minimum=1, elem_id="prj-workers")
            with gr.Row():
                start = gr.Button("Start / resume", variant="primary", elem_id="prj-start")
                stop = gr.Button("Stop", elem_id="prj-stop")
    started = gr.Markdown(elem_id="prj-started")
    progress = gr.HTML(progress_html(0, "choose or name a project", "idle"), elem_id="prj-progress-html")
    timer = gr.Timer(1.0)
    with gr.Accordion("Failed files", open=False):
        failures = gr.Dataframe(interactive=False, elem_id="prj-failures")

    gr.Markdown("### Detections")
    with gr.Row():
        min_conf = gr.Slider(0.01, 0.99, value=0.25, step=0.01, label="Minimum confidence", elem_id="prj-minconf")
        sensitivity = gr.Slider(0.5, 1.5, value=1.0, step=0.05, label="Sensitivity", elem_id="prj-sensitivity")
        language = gr.Dropdown([(f"{LANGUAGES.get(c, c)} ({c})", c) for c in available_languages()], value="en",
                               label="Common names", elem_id="prj-language")
        merge = gr.Checkbox(False, label="Merge consecutive windows", elem_id="prj-merge")
    with gr.Row():
        lat = gr.Textbox("", label="Latitude", placeholder="empty = no location filter", elem_id="prj-lat")
        lon = gr.Textbox("", label="Longitude", placeholder="e.g. -1.26", elem_id="prj-lon")
        week = gr.Textbox("", label="Week 1-48", placeholder="empty = year-round", elem_id="prj-week")
        threshold = gr.Slider(0.0, 0.5, value=0.03, step=0.01, label="Location-filter threshold", elem_id="prj-sfthresh")
        species_file = gr.File(file_types=[".txt"], label="Species list (.txt)", elem_id="prj-slist", height=80)
    folders = gr.Dropdown([], multiselect=True, label="Folders (sites); none = all", elem_id="prj-folders")
    show = gr.Button("Show detections", variant="primary", elem_id="prj-browse")
    summary = gr.Markdown(elem_id="prj-summary")
    table = gr.Dataframe(headers=DETECTION_COLUMNS, interactive=False, elem_id="prj-table", max_height=400)
    with gr.Row():
        heatmap = gr.Plot(label="Species × date", elem_id="prj-heatmap")
        hours = gr.Plot(label="Per hour", elem_id="prj-hours")
    with gr.Accordion("Removed by the location filter", open=False):
        removed = gr.Dataframe(interactive=False, elem_id="prj-removed")
    gr.Markdown("### Exports")
    with gr.Row():
        formats = gr.CheckboxGroup(EXPORT_CHOICES, value=["CSV", "Raven"], label="Formats", elem_id="prj-formats")
        export_button = gr.Button("Export", elem_id="prj-export")
    downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="prj-downloads")

    filters = [folders, min_conf, sensitivity, lat, lon, week, threshold, species_file, language, merge]
    start.click(on_start, [project, folder, uploads, model, hop, workers], [started, project], api_name="project_start")
    stop.click(on_stop, [project], [started], api_name="project_stop")
    timer.tick(on_poll, [project], [progress], api_name="project_status", queue=False, show_progress="hidden")
    project.change(on_project, [project], [folders, failures, progress], api_name="project_info")
    show.click(on_browse, [project] + filters, [summary, table, heatmap, hours, removed], api_name="project_browse")
    export_button.click(on_export, [project, formats] + filters, [downloads], api_name="project_export")
    demo.load(on_load, None, [project, folder], api_visibility="private")
