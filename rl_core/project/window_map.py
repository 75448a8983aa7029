"""The map of a project's windows: one point per stored window embedding, projected to 2-D.

:func:`window_map` takes the windows of one run (the whole project, or the files of some folders and a date
range), keeps at most ``max_points`` of them (a random sample with a fixed seed, so the same selection gives
the same map; :attr:`WindowMap.description` says which), reads their vectors from the run's search index
(:func:`rl_core.project.search.sync_index`) and projects them with :func:`rl_core.projection.project` (PCA by
default, UMAP or t-SNE on request). Each point carries what a map can be coloured by: the window's top species
and its score, the project's latest label on it, its folder, date and hour of day.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from rl_core.errors import ConfigError
from rl_core.project.search import OpenedProject, parse_date, sync_index, window_table
from rl_core.project.store import ProjectStore

log = logging.getLogger(__name__)

#: points drawn at most: a browser stays responsive with tens of thousands (WebGL), and PCA takes about a second
MAX_POINTS = 20_000
UNLABELLED = "unlabelled"
POINT_COLUMNS = ["file", "start_s", "end_s", "species", "score", "label", "folder", "recorded_at", "date", "hour",
                 "path", "file_id", "window_index", "x", "y"]


@dataclass
class WindowMap:
    """Points (``POINT_COLUMNS``) of the mapped windows, out of ``total`` windows in the selection."""

    points: pd.DataFrame
    total: int
    method: str
    model: str

    @property
    def sampled(self) -> bool:
        return len(self.points) < self.total

    @property
    def description(self) -> str:
        if self.sampled:
            return f"{len(self.points):,} of {self.total:,} windows, random sample"
        return f"all {self.total:,} windows"


def window_map(project: str | Path | ProjectStore, run_id: str | None = None, folders: Sequence[str] | None = None,
               date_from: str | None = None, date_to: str | None = None, max_points: int = MAX_POINTS,
               method: str = "PCA", seed: int = 0) -> WindowMap:
    """The 2-D map of the run's windows (of ``folders`` and recordings started ``date_from``..``date_to``,
    ISO dates inclusive), at most ``max_points`` of them drawn at random with ``seed``."""
    from rl_core.projection import project as project_2d

    max_points = int(max_points)
    if max_points < 2:
        raise ConfigError(f"a map needs at least 2 points, got a limit of {max_points}")
    with OpenedProject(project) as store:
        run_id = store.default_run(run_id)
        index = sync_index(store, run_id)
        keys = np.asarray(index.keys())
        # a file analysed again has newer rows further down the index: keep each window's latest row
        candidate = ~pd.DataFrame(keys).duplicated(keep="last").to_numpy()
        files = _selected_files(store, run_id, folders, date_from, date_to)
        candidate &= np.isin(keys[:, 0], files)
        rows = np.flatnonzero(candidate)
        total = len(rows)
        if total == 0:
            raise ConfigError("no window of the project matches the folder and date selection: widen it")
        if total > max_points:
            rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_points, replace=False))
        table = window_table(store, run_id, keys[rows])
        rows = rows[table.pop("order").to_numpy()]
        if len(rows) < 2:
            raise ConfigError(f"a map needs at least 2 windows; the selection has {len(rows)}")
        vectors = np.asarray(index.vectors()[rows], dtype=np.float32)
        table = _with_species(store, run_id, table)
        table["label"] = _latest_labels(store, run_id, table)
        model = store.run_settings(run_id)["model"]
    coords = project_2d(vectors, method, seed=seed)
    start = pd.to_datetime(table["recorded_at"]) + pd.to_timedelta(table["start_s"], unit="s")
    table["date"] = start.dt.strftime("%Y-%m-%d").fillna("")
    table["hour"] = (start.dt.hour + start.dt.minute / 60).round(2)
    table["x"], table["y"] = coords[:, 0].round(5), coords[:, 1].round(5)
    log.info("mapped %d of %d windows of run %s with %s", len(table), total, run_id, method)
    return WindowMap(table[POINT_COLUMNS].reset_index(drop=True), total, method, model)


def _selected_files(store: ProjectStore, run_id: str, folders, date_from, date_to) -> np.ndarray:
    files = store.files(run_id)
    keep = np.ones(len(files), dtype=bool)
    if folders:
        keep &= files["folder"].isin(list(folders)).to_numpy()
    if date_from:  # as search filters: files without a date leave a dated selection
        keep &= (files["recorded_at"] >= parse_date(date_from, "from")).fillna(False).to_numpy(dtype=bool)
    if date_to:
        keep &= (files["recorded_at"] < parse_date(date_to, "to") + pd.Timedelta(days=1)).fillna(False).to_numpy(dtype=bool)
    return files["file_id"].to_numpy(np.int64)[keep]


def _with_species(store: ProjectStore, run_id: str, table: pd.DataFrame) -> pd.DataFrame:
    """``species`` and ``score``: each window's best-scored class (empty and 0 where the model scored none)."""
    wanted = pd.DataFrame({"row": np.arange(len(table)), "file_id": table["file_id"].astype(np.int64),
                           "window_index": table["window_index"].astype(np.int32)})
    con = store.con.cursor()
    con.register("map_windows", wanted)
    try:
        best = con.execute("""
            select k.row, arg_max(c.scientific_name, s.score) as species, max(s.score) as score
            from map_windows k
            join scores s on s.run_id = ? and s.file_id = k.file_id and s.window_index = k.window_index
            join classes c on c.run_id = s.run_id and c.class_index = s.class_index
            group by k.row""", [run_id]).df()
    finally:
        con.close()
    out = table.reset_index(drop=True)
    species = np.full(len(out), "", dtype=object)
    score = np.zeros(len(out), dtype=np.float32)
    species[best["row"].to_numpy()] = best["species"].to_numpy()
    score[best["row"].to_numpy()] = best["score"].to_numpy(np.float32)
    out["species"], out["score"] = species, score.round(4)
    return out


def _latest_labels(store: ProjectStore, run_id: str, table: pd.DataFrame) -> list[str]:
    """Each window's latest verdict as ``"positive: CLASS"`` (``unlabelled`` where none)."""
    from rl_core.project.labelling import labels

    done = labels(store, run_id)
    done = done[done["window_index"] >= 0].drop_duplicates(["file_id", "window_index"], keep="last")
    latest = {(int(f), int(w)): f"{v}: {c}" for f, w, v, c in
              zip(done["file_id"], done["window_index"], done["label"], done["class_name"])}
    return [latest.get((int(f), int(w)), UNLABELLED) for f, w in zip(table["file_id"], table["window_index"])]
