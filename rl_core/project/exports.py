"""Exports of a project's detections, filtered by one DetectionFilter: the formats BirdNET-Analyzer users know.

Every writer is deterministic (rows fully sorted, fixed number formats, no timestamps) and atomic
(``rl_core.atomic``): the same export run twice gives byte-identical files.
"""

from __future__ import annotations

import io
import logging
import math
import zipfile
from pathlib import Path
from typing import Sequence

import pandas as pd

from rl_core.atomic import atomic_write, write_text_atomic
from rl_core.detection_filters import DetectionFilter
from rl_core.errors import ConfigError
from rl_core.exports import RAVEN_HEADER, audacity_lines, raven_lines
from rl_core.project.store import ProjectStore

log = logging.getLogger(__name__)

FORMATS = ("csv", "raven", "audacity", "kaleidoscope", "parquet", "summaries")
CSV_COLUMNS = ["file", "start_s", "end_s", "rank", "scientific_name", "common_name", "score"]
SETTING_COLUMNS = ["model", "run_id", "hop_s", "min_conf", "sensitivity", "lat", "lon", "week", "location_threshold",
                   "species_list", "language", "merge_consecutive"]
KALEIDOSCOPE_HEADER = ("INDIR,FOLDER,IN FILE,OFFSET,DURATION,scientific_name,common_name,confidence,lat,lon,week,"
                       "overlap,sensitivity\n")


def raw_threshold(flt: DetectionFilter) -> float:
    """The stored (sensitivity 1.0) score that maps to ``flt.min_conf`` at ``flt.sensitivity``."""
    p = min(max(flt.min_conf, 1e-12), 1 - 1e-12)
    logit = math.log(p / (1 - p)) - (flt.sensitivity - 1.0) * 10.0
    return 1.0 / (1.0 + math.exp(-logit))


def project_detections(store: ProjectStore, flt: DetectionFilter | None = None, run_id: str | None = None,
                       folders: Sequence[str] | None = None, files: Sequence[str] | None = None) -> pd.DataFrame:
    """Filtered detections of a run (all files, or the given folders / relative paths), with a ``rank`` column."""
    flt = flt or DetectionFilter()
    run_id = store.default_run(run_id)
    settings = store.run_settings(run_id)
    raw_min = raw_threshold(flt)
    if raw_min < settings["score_floor"] * (1 - 1e-6):
        log.warning("min_conf %.3g at sensitivity %.2f needs stored scores down to %.2g, but this run kept scores "
                    ">= %.2g: some detections near the threshold may be missing", flt.min_conf, flt.sensitivity,
                    raw_min, settings["score_floor"])
    frame = flt.apply(store.window_scores(run_id, raw_min * (1 - 1e-6), folders, files))
    frame["rank"] = frame.groupby(["file", "start_s"], sort=False).cumcount() + 1
    return frame


def _settings_values(store: ProjectStore, run_id: str, flt: DetectionFilter) -> dict:
    run = store.run_settings(run_id)
    values = flt.settings()
    return {"model": run["model"], "run_id": run_id, "hop_s": run["hop_s"] if run["hop_s"] is not None else run["window_s"],
            **{k: values[k] for k in SETTING_COLUMNS[3:]},
            "merge_consecutive": "all" if values["merge_consecutive"] is None else values["merge_consecutive"]}


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_csv(frame: pd.DataFrame, path: str | Path, settings: dict) -> Path:
    """The CLI's prediction columns plus folder, path and every setting used (one column each)."""
    out = io.StringIO()
    columns = CSV_COLUMNS + ["folder", "path"] + SETTING_COLUMNS
    out.write(",".join(columns) + "\n")
    tail = [_csv_cell(_fmt(settings[c])) for c in SETTING_COLUMNS]
    for row in frame.itertuples(index=False):
        cells = [_csv_cell(row.file), f"{row.start_s:.3f}", f"{row.end_s:.3f}", str(row.rank), _csv_cell(row.scientific_name),
                 _csv_cell(row.common_name), f"{row.score:.4f}", _csv_cell(row.folder), _csv_cell(row.path)]
        out.write(",".join(cells + tail) + "\n")
    return write_text_atomic(out.getvalue(), path)


def _csv_cell(text: str) -> str:
    text = str(text)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _raven_band(frame: pd.DataFrame) -> pd.DataFrame:
    """BirdNET-Analyzer's box: 0 Hz to the file's Nyquist frequency, at most 24 kHz (the model's)."""
    high = frame["sample_rate"].where(frame["sample_rate"] > 0, 48000.0).clip(upper=48000.0) / 2
    return frame.assign(low_hz=0.0, high_hz=high)


def _out_name(folder: str, path: str, suffix: str) -> Path:
    """``<folder>/<stem><suffix>``: the recordings' folder layout (site folders) is kept."""
    return Path(folder) / (Path(path).stem + suffix)


def write_raven(frame: pd.DataFrame, files: pd.DataFrame, folder: str | Path) -> list[Path]:
    """One selection table per file (also for files without detections) and one combined table.

    In the combined table Begin/End Time run on across the files in path order (as Raven plays a file list);
    File Offset (s) is the time within the file named in Begin Path / Begin File.
    """
    folder = Path(folder)
    written = []
    by_file = {name: part for name, part in frame.groupby("path", sort=False)}
    combined, offset, next_id = [RAVEN_HEADER], 0.0, 1
    for f in files.sort_values("path").itertuples(index=False):
        part = by_file.get(f.path, frame.iloc[0:0])
        part = _raven_band(part)
        written.append(write_text_atomic(RAVEN_HEADER + "".join(raven_lines(part)),
                                         folder / _out_name(f.folder, f.path, ".selection.table.txt")))
        combined += raven_lines(part, next_id, offset)
        next_id += len(part)
        offset += float(f.duration_s)
    written.append(write_text_atomic("".join(combined), folder / "combined.selection.table.txt"))
    return written


def write_audacity(frame: pd.DataFrame, files: pd.DataFrame, folder: str | Path) -> list[Path]:
    """Audacity label tracks, one per file: start, end, ``Scientific, Common``, confidence (BirdNET-Analyzer's form)."""
    folder = Path(folder)
    by_file = {name: part for name, part in frame.groupby("path", sort=False)}
    written = []
    for f in files.sort_values("path").itertuples(index=False):
        part = by_file.get(f.path, frame.iloc[0:0])
        written.append(write_text_atomic(audacity_lines(part), folder / _out_name(f.folder, f.path, ".labels.txt")))
    return written


def write_kaleidoscope(frame: pd.DataFrame, path: str | Path, settings: dict) -> Path:
    """Kaleidoscope CSV with BirdNET-Analyzer's header (lat/lon/week -1 when no location filter is set)."""
    lat = settings["lat"] if settings["lat"] is not None else -1.0
    lon = settings["lon"] if settings["lon"] is not None else -1.0
    week = settings["week"] if settings["week"] is not None else -1
    window = settings.get("window_s") or 0.0
    overlap = max(0.0, window - settings["hop_s"]) if settings["hop_s"] else 0.0
    out = io.StringIO()
    out.write(KALEIDOSCOPE_HEADER)
    for r in frame.itertuples(index=False):
        parent = Path(r.path).parent
        out.write(",".join([_csv_cell(str(parent.parent)), _csv_cell(parent.name), _csv_cell(Path(r.path).name),
                            f"{r.start_s:.3f}", f"{r.end_s - r.start_s:.3f}", _csv_cell(r.scientific_name),
                            _csv_cell(r.common_name), f"{r.score:.4f}", f"{lat:.4f}", f"{lon:.4f}", str(week),
                            f"{overlap:g}", f"{settings['sensitivity']:g}"]) + "\n")
    return write_text_atomic(out.getvalue(), path)


def write_parquet(frame: pd.DataFrame, path: str | Path, settings: dict) -> Path:
    """The CSV's rows as typed columns (settings as constant columns too, and in the file's metadata)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = frame[CSV_COLUMNS + ["folder", "path", "recorded_at"]].copy()
    for key in SETTING_COLUMNS:
        table[key] = settings[key] if settings[key] is not None else None
    arrow = pa.Table.from_pandas(table.reset_index(drop=True), preserve_index=False)
    arrow = arrow.replace_schema_metadata({"rl_core.settings": json.dumps(settings, sort_keys=True, default=str)})
    with atomic_write(path, "wb") as handle:
        pq.write_table(arrow, handle, compression="zstd")
    return Path(path)


def summaries(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Detections per species per day, per species per hour of day, and per species per folder (site)."""
    when = pd.to_datetime(frame["recorded_at"]) + pd.to_timedelta(frame["start_s"], unit="s")
    base = frame.assign(date=when.dt.strftime("%Y-%m-%d").fillna("unknown"),
                        hour=when.dt.hour.astype("Int64").astype(str).replace("<NA>", "unknown"))
    keys = ["scientific_name", "common_name"]

    def count(by: list[str]) -> pd.DataFrame:
        if base.empty:
            return pd.DataFrame(columns=by + ["detections", "files", "max_score"])
        grouped = base.groupby(by, sort=True).agg(detections=("score", "size"), files=("path", "nunique"),
                                                   max_score=("score", "max")).reset_index()
        grouped["max_score"] = grouped["max_score"].round(4)
        return grouped

    return {"per_species_day": count(["date"] + keys), "per_species_hour": count(["hour"] + keys),
            "per_folder": count(["folder"] + keys)}


def write_summaries(frame: pd.DataFrame, folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return [write_text_atomic(table.to_csv(index=False, float_format="%.4f", lineterminator="\n"), folder / f"{name}.csv")
            for name, table in summaries(frame).items()]


def export_project(project: str | Path | ProjectStore, out_dir: str | Path, formats: Sequence[str] = FORMATS,
                   flt: DetectionFilter | None = None, run_id: str | None = None,
                   folders: Sequence[str] | None = None, files: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """Write the chosen formats for a run (all files, or a selection) into ``out_dir``; returns the paths per format."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown export format(s) {unknown}: choose from {', '.join(FORMATS)}")
    flt = flt or DetectionFilter()
    store = project if isinstance(project, ProjectStore) else ProjectStore(project, read_only=True)
    try:
        run_id = store.default_run(run_id)
        frame = project_detections(store, flt, run_id, folders, files)
        file_table = store.files(run_id)
        if folders:
            file_table = file_table[file_table["folder"].isin(folders)]
        if files:
            file_table = file_table[file_table["rel_path"].isin(files) | file_table["path"].isin(files)]
        settings = {**_settings_values(store, run_id, flt), "window_s": store.run_settings(run_id)["window_s"]}
    finally:
        if not isinstance(project, ProjectStore):
            store.close()
    out = Path(out_dir)
    written: dict[str, list[Path]] = {}
    for fmt in formats:
        if fmt == "csv":
            written[fmt] = [write_csv(frame, out / "detections.csv", settings)]
        elif fmt == "raven":
            written[fmt] = write_raven(frame, file_table, out / "raven")
        elif fmt == "audacity":
            written[fmt] = write_audacity(frame, file_table, out / "audacity")
        elif fmt == "kaleidoscope":
            written[fmt] = [write_kaleidoscope(frame, out / "kaleidoscope.csv", settings)]
        elif fmt == "parquet":
            written[fmt] = [write_parquet(frame, out / "detections.parquet", settings)]
        elif fmt == "summaries":
            written[fmt] = write_summaries(frame, out / "summaries")
    return written


def zip_folder(folder: str | Path, path: str | Path) -> Path:
    """A zip of ``folder`` with sorted entries and fixed timestamps (identical bytes for identical files)."""
    folder = Path(folder)
    with atomic_write(path, "wb") as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for item in sorted(p for p in folder.rglob("*") if p.is_file()):
                info = zipfile.ZipInfo(item.relative_to(folder).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, item.read_bytes())
    return Path(path)
