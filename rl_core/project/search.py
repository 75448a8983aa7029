"""Find similar calls, review and label windows, and train your own classifier inside an archive project.

Everything here works on one run of a project (its model, hop and stored window embeddings):

* :func:`sync_index` keeps a :class:`rl_core.similarity.WindowIndex` per run in ``search/<run_id>/``, adding
  only the embedding parts committed since the last sync (``parts.json`` lists those indexed), so a growing
  project never rebuilds it;
* :func:`search` embeds query clips (an audio file, a time range of a project file, or a stored window)
  through the run's model and recording path, averages them, and returns the nearest windows with their file,
  times, folder and date, optionally filtered by folder and date range;
* :func:`add_labels` / :func:`labels` store verdicts (positive / negative / unsure) in the project's
  ``labels`` table; :func:`review_queue` and :func:`calibrate_species` turn verified detections into a
  per-species threshold kept in the ``thresholds`` table, which exports can use (:func:`calibrated_filter`);
* :func:`train_project_classifier` trains a :mod:`rl_core.custom_classifier` probe on the labelled windows and
  :func:`apply_classifier` ranks every window of the run by it.

The vectors the classifier sees are the index's (L2-normalised, float16), which the classifier normalises the
same way when it is applied to a fresh recording.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from rl_core.atomic import write_text_atomic
from rl_core.errors import ConfigError
from rl_core.project.store import EMBEDDINGS_DIR, ProjectStore
from rl_core.review import VERDICTS, calibrate_threshold, precision_by_score_bin, review_sample
from rl_core.similarity import WindowIndex, normalise

log = logging.getLogger(__name__)

SEARCH_DIR = "search"
SOURCES = ("search", "review", "classifier")
RESULT_COLUMNS = ["file", "start_s", "end_s", "similarity", "folder", "recorded_at", "path", "file_id", "window_index"]
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class QueryClip:
    """One query clip: an audio file (``path``), or a range of a project file (``file`` + ``start_s``/``end_s``),
    or one stored window (``file`` + ``window_index``). ``file`` is a project file's relative or full path."""

    path: str | None = None
    file: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    window_index: int | None = None

    @classmethod
    def parse(cls, text: str) -> "QueryClip":
        """``FILE`` (an audio file), ``FILE@START-END`` (seconds of a project file) or ``FILE#WINDOW``."""
        if Path(text).is_file():  # an existing audio file wins, whatever characters its name holds
            return cls(path=text)
        if "#" in text:
            name, _, index = text.rpartition("#")
            if index.isdigit():
                return cls(file=name, window_index=int(index))
        if "@" in text:
            name, _, span = text.rpartition("@")
            lo, sep, hi = span.partition("-")
            try:
                return cls(file=name, start_s=float(lo), end_s=float(hi)) if sep else cls(path=text)
            except ValueError:
                pass
        return cls(path=text)

    def describe(self) -> str:
        if self.path:
            return Path(self.path).name
        if self.window_index is not None:
            return f"{self.file} window {self.window_index}"
        return f"{self.file} {self.start_s:g}-{self.end_s:g} s"


def _open(project: str | Path | ProjectStore, write: bool = False) -> tuple[ProjectStore, bool]:
    if isinstance(project, ProjectStore):
        return project, False
    return ProjectStore(project, read_only=not write), True


class _Opened:
    """``with _Opened(project) as store``: opens a folder (closing it after), or passes a store through."""

    def __init__(self, project, write: bool = False) -> None:
        self.store, self.owned = _open(project, write)

    def __enter__(self) -> ProjectStore:
        return self.store

    def __exit__(self, *exc) -> None:
        if self.owned:
            self.store.close()


# --- the index ----------------------------------------------------------------------------------------------
def _index_dir(store: ProjectStore, run_id: str) -> Path:
    return store.folder / SEARCH_DIR / run_id


def _no_embeddings(store: ProjectStore, run_id: str) -> ConfigError:
    return ConfigError(f"run {run_id} of project {store.folder} has no stored embeddings (analysed with "
                       "--no-embeddings?): analyse the folders again without --no-embeddings to search or train")


#: opened indexes per folder (an IVF index of a million windows takes seconds to read) and a lock per folder, so
#: two requests of one server never add the same part twice
_INDEXES: dict[Path, WindowIndex] = {}
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def sync_index(project: str | Path | ProjectStore, run_id: str | None = None,
               progress: Progress | None = None) -> WindowIndex:
    """The run's search index, with every committed embedding part added (only new parts are read)."""
    with _Opened(project) as store:
        run_id = store.default_run(run_id)
        parts = store.con.execute("select part, n_rows from embedding_parts where run_id = ? order by part",
                                  [run_id]).fetchall()
        if not parts:
            raise _no_embeddings(store, run_id)
        folder = _index_dir(store, run_id)
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(folder, threading.Lock())
        with lock:
            return _sync(store, run_id, folder, [p for p, _n in parts], progress)


def _sync(store: ProjectStore, run_id: str, folder: Path, parts: list[str], progress: Progress | None) -> WindowIndex:
    import pyarrow.parquet as pq

    ledger_path = folder / "parts.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {"parts": [], "count": 0}
    index = _INDEXES.get(folder)
    if index is None or index.count != ledger["count"]:
        index = WindowIndex(folder) if (folder / "index.json").is_file() else None
    if index is not None and index.count != ledger["count"]:
        # an add finished but its ledger entry did not: the only safe repair is a fresh index
        log.warning("%s: index and its parts ledger disagree; rebuilding the index", folder)
        shutil.rmtree(folder)
        index, ledger = None, {"parts": [], "count": 0}
    done = set(ledger["parts"])
    todo = [p for p in parts if p not in done]
    for i, part in enumerate(todo):
        table = pq.read_table(store.folder / EMBEDDINGS_DIR / run_id / part)
        column = table.column("embedding").combine_chunks()
        dim = column.type.list_size
        vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        keys = np.stack([table.column("file_id").to_numpy(), table.column("window_index").to_numpy()], axis=1)
        if index is None:
            index = WindowIndex(folder, dim=dim)
        index.add(keys, vectors)
        ledger = {"parts": ledger["parts"] + [part], "count": index.count}
        write_text_atomic(json.dumps(ledger), ledger_path)
        if progress is not None:
            progress((i + 1) / len(todo), f"indexed {part} ({index.count} windows)")
    if index is None:
        index = WindowIndex(folder)
    _INDEXES[folder] = index
    return index


def _window_table(store: ProjectStore, run_id: str, keys: np.ndarray) -> pd.DataFrame:
    """Window rows (with file facts) for (file_id, window_index) keys, in the keys' order."""
    frame = pd.DataFrame({"file_id": keys[:, 0].astype(np.int64), "window_index": keys[:, 1].astype(np.int32),
                          "order": np.arange(len(keys))})
    con = store.con.cursor()  # a fresh cursor: register() refuses a connection with an unfinished result
    con.register("wanted_keys", frame)
    try:
        out = con.execute("""
            select k.order, f.rel_path as file, w.start_s, w.end_s, f.folder, f.recorded_at, f.path,
                   k.file_id, k.window_index
            from wanted_keys k
            join windows w on w.run_id = ? and w.file_id = k.file_id and w.window_index = k.window_index
            join files f on f.file_id = k.file_id
            order by k.order""", [run_id]).df()
    finally:
        con.close()
    return out


def _find_file(store: ProjectStore, run_id: str, name: str) -> tuple[int, str]:
    row = store.con.execute("""
        select f.file_id, f.rel_path from files f join file_runs fr using (file_id)
        where fr.run_id = ? and (f.rel_path = ? or f.path = ? or f.rel_path like '%/' || ?) order by f.path limit 1""",
                            [run_id, name, name, name]).fetchone()
    if row is None:
        raise ConfigError(f"'{name}' is not a file of this project's run {run_id}: give its path as the project "
                          "lists it (the 'file' column of search results)")
    return int(row[0]), row[1]


def _rows_of(index: WindowIndex, keys: np.ndarray) -> np.ndarray:
    """Index rows holding these (file_id, window_index) keys (the latest row where a file was re-analysed)."""
    stored = np.asarray(index.keys())
    lookup = {(int(a), int(b)): i for i, (a, b) in enumerate(stored)}
    rows = [lookup.get((int(a), int(b)), -1) for a, b in keys]
    missing = [tuple(map(int, k)) for k, r in zip(keys, rows) if r < 0]
    if missing:
        raise ConfigError(f"{len(missing)} window(s) have no stored embedding (e.g. file id {missing[0][0]}, "
                          f"window {missing[0][1]})")
    return np.asarray(rows, dtype=np.int64)


def embed_query(project: str | Path | ProjectStore, clips: Sequence[QueryClip | str], run_id: str | None = None,
                model=None) -> np.ndarray:
    """One unit vector for the query: the mean of each clip's (normalised) window embeddings, averaged over clips."""
    if not clips:
        raise ConfigError("no query clip given: give an audio file, a project file with a time range, or a window")
    with _Opened(project) as store:
        run_id = store.default_run(run_id)
        settings = store.run_settings(run_id)
        index = sync_index(store, run_id)
        window_s = float(settings["window_s"] or 0.0)
        vectors = []
        for clip in clips:
            clip = QueryClip.parse(clip) if isinstance(clip, str) else clip
            if clip.path:
                vectors.append(_embed_audio_clip(clip.path, settings, window_s, model))
                continue
            file_id, rel = _find_file(store, run_id, clip.file)
            if clip.window_index is not None:
                keys = np.array([[file_id, clip.window_index]])
            else:
                if clip.start_s is None or clip.end_s is None or clip.end_s <= clip.start_s:
                    raise ConfigError(f"{rel}: a time range needs a start before its end (got {clip.start_s}-{clip.end_s})")
                if clip.end_s - clip.start_s < window_s - 1e-6:
                    raise ConfigError(_too_short(rel, clip.end_s - clip.start_s, window_s, settings["model"]))
                # the stored windows whose middle falls inside the range: embedded exactly as the project was
                keys = np.array(store.con.execute("""
                    select file_id, window_index from windows where run_id = ? and file_id = ?
                      and (start_s + end_s) / 2 between ? and ? order by window_index""",
                                                  [run_id, file_id, clip.start_s, clip.end_s]).fetchall(), dtype=np.int64)
                if len(keys) == 0:
                    raise ConfigError(f"{rel} has no analysed window between {clip.start_s:g} and {clip.end_s:g} s")
            rows = _rows_of(index, keys.reshape(-1, 2))
            vectors.append(np.asarray(index.vectors()[np.sort(rows)], dtype=np.float32).mean(axis=0))
        return normalise(normalise(np.stack(vectors)).mean(axis=0))[0]


def _too_short(name: str, seconds: float, window_s: float, model: str) -> str:
    return (f"the query clip {name} is {seconds:.2f} s long, shorter than one {window_s:g}-s window of {model}: "
            f"give at least {window_s:g} s")


def _embed_audio_clip(path: str, settings: dict, window_s: float, model) -> np.ndarray:
    from rl_core.audio import audio_info
    from rl_core.cache import get_model
    from rl_core.inference import analyse_recording

    duration = audio_info(path).duration_s
    if duration < window_s - 1e-6:
        raise ConfigError(_too_short(Path(path).name, duration, window_s, settings["model"]))
    model = model or get_model(settings["model"], device="cpu")
    # the project's recording path: same model, same hop, same windowing as the analysis
    result = analyse_recording(model, path, hop_s=settings.get("hop_s"), want_scores=False, want_embeddings=True)
    return normalise(result.embeddings).mean(axis=0)


def search(project: str | Path | ProjectStore, clips: Sequence[QueryClip | str], top_n: int = 20,
           run_id: str | None = None, folders: Sequence[str] | None = None, date_from: str | None = None,
           date_to: str | None = None, model=None) -> pd.DataFrame:
    """The ``top_n`` windows of the run most similar (cosine) to the averaged query clips, best first.

    ``folders`` keeps windows of those folders; ``date_from`` / ``date_to`` (ISO dates, inclusive) keep windows of
    recordings started in that range (files without a date are then left out).
    """
    top_n = int(top_n)
    if top_n < 1:
        raise ConfigError(f"--top must be at least 1, got {top_n}")
    with _Opened(project) as store:
        run_id = store.default_run(run_id)
        index = sync_index(store, run_id)
        query = embed_query(store, clips, run_id, model=model)
        lo = _date(date_from, "from") if date_from else None
        hi = _date(date_to, "to") + pd.Timedelta(days=1) if date_to else None
        filtered = bool(folders) or lo is not None or hi is not None
        k = min(index.count, top_n if not filtered else max(top_n * 20, 1000))
        while True:
            hits = index.search(query, top_n=k)[0]
            table = _window_table(store, run_id, hits.keys)
            table["similarity"] = hits.similarities[table.pop("order").to_numpy()]
            table = table.drop_duplicates(["file_id", "window_index"], keep="first")
            keep = np.ones(len(table), dtype=bool)
            if folders:
                keep &= table["folder"].isin(list(folders)).to_numpy()
            if lo is not None:
                keep &= (table["recorded_at"] >= lo).fillna(False).to_numpy(dtype=bool)
            if hi is not None:
                keep &= (table["recorded_at"] < hi).fillna(False).to_numpy(dtype=bool)
            table = table[keep]
            if len(table) >= top_n or k >= index.count:
                break
            k = min(index.count, k * 8)
        return table[RESULT_COLUMNS].head(top_n).reset_index(drop=True)


def _date(text: str, which: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(str(text).strip()).normalize()
    except (ValueError, TypeError):
        raise ConfigError(f"the '{which}' date '{text}' is not a date: write it as YYYY-MM-DD") from None


# --- labels ---------------------------------------------------------------------------------------------------
def add_labels(project: str | Path | ProjectStore, windows: pd.DataFrame | Sequence[dict], class_name: str,
               verdict: str, source: str = "search", run_id: str | None = None) -> int:
    """Store one verdict for each window (rows with ``file_id`` and ``window_index``, or ``file_id``/``start_s``/
    ``end_s``); a newer verdict on the same window and class replaces the older one. Returns the count stored."""
    if verdict not in VERDICTS:
        raise ConfigError(f"unknown verdict '{verdict}': use {', '.join(VERDICTS)}")
    if source not in SOURCES:
        raise ConfigError(f"unknown label source '{source}': use {', '.join(SOURCES)}")
    class_name = (class_name or "").strip()
    if not class_name:
        raise ConfigError("a label needs a class name (the call or species the verdict is about)")
    frame = pd.DataFrame(list(windows) if not isinstance(windows, pd.DataFrame) else windows)
    if frame.empty:
        raise ConfigError("no window selected to label")
    with _Opened(project, write=True) as store:
        run_id = store.default_run(run_id)
        if "start_s" not in frame.columns:
            keys = np.array([[int(f), int(w)] for f, w in zip(frame["file_id"], frame["window_index"])], dtype=np.int64)
            frame = _window_table(store, run_id, keys)
            if len(frame) < len(keys):
                raise ConfigError(f"{len(keys) - len(frame)} of the windows to label are not in run {run_id} "
                                  "(list them again: search or review)")
        rows = pd.DataFrame({"run_id": run_id, "file_id": frame["file_id"].astype(np.int64),
                             "start_s": frame["start_s"].astype(float), "end_s": frame["end_s"].astype(float),
                             "scientific_name": class_name, "label": verdict, "source": source,
                             "created_at": datetime.now()})
        with store.transaction(cursor=True) as con:
            con.register("new_labels", rows)
            con.execute("""delete from labels l using new_labels n where l.run_id = n.run_id and l.file_id = n.file_id
                           and abs(l.start_s - n.start_s) < 1e-3 and l.scientific_name = n.scientific_name""")
            con.execute("insert into labels by name select * from new_labels")
        return len(rows)


def labels(project: str | Path | ProjectStore, run_id: str | None = None, class_name: str | None = None) -> pd.DataFrame:
    """The run's labels with each one's window index (labels of times no window starts at keep window_index -1)."""
    with _Opened(project) as store:
        run_id = store.default_run(run_id)
        where, params = "l.run_id = ?", [run_id]
        if class_name:
            where += " and l.scientific_name = ?"
            params.append(class_name)
        return store.con.execute(f"""
            select f.rel_path as file, l.start_s, l.end_s, l.scientific_name as class_name, l.label, l.source,
                   l.created_at, l.file_id, coalesce(w.window_index, -1) as window_index, f.folder
            from labels l join files f using (file_id)
            left join windows w on w.run_id = l.run_id and w.file_id = l.file_id and abs(w.start_s - l.start_s) < 1e-3
            where {where} order by l.created_at, f.rel_path, l.start_s""", params).df()


# --- review and calibration ------------------------------------------------------------------------------------
def review_queue(project: str | Path | ProjectStore, species: str | None = None, ranked: pd.DataFrame | None = None,
                 n: int = 20, order: str = "score", run_id: str | None = None, bins: int = 10) -> pd.DataFrame:
    """Windows to listen to: a species' detections (its stored scores) or a ranked table (search results with
    ``similarity`` or classifier output with ``score``), best first or spread over score bins; with any verdict
    already given."""
    with _Opened(project) as store:
        run_id = store.default_run(run_id)
        if ranked is None:
            if not species:
                raise ConfigError("a review queue needs a species (of the run's classes) or a ranked table")
            frame = store.con.execute("""
                select f.rel_path as file, w.start_s, w.end_s, s.score, f.folder, f.recorded_at, f.path,
                       s.file_id, s.window_index
                from scores s join classes c using (run_id, class_index)
                join windows w using (run_id, file_id, window_index) join files f using (file_id)
                where s.run_id = ? and c.scientific_name = ?""", [run_id, species]).df()
            if frame.empty:
                raise ConfigError(f"run {run_id} has no detection of '{species}' (check the scientific name)")
        else:
            frame = ranked.copy()
            if "score" not in frame.columns:
                frame["score"] = frame["similarity"]
        picked = review_sample(frame["score"].to_numpy(), n=n, order=order, bins=bins)
        queue = frame.iloc[picked].reset_index(drop=True)
        if species:
            done = labels(store, run_id, species)[["file_id", "start_s", "label"]]
            queue["_start"] = queue["start_s"].round(3)
            done = done.assign(_start=done["start_s"].round(3)).drop(columns="start_s")
            done = done.drop_duplicates(["file_id", "_start"], keep="last")
            queue = queue.merge(done, on=["file_id", "_start"], how="left").drop(columns="_start")
        return queue


def _ensure_thresholds_table(store: ProjectStore) -> None:
    store.con.execute("""create table if not exists thresholds(
        run_id varchar, scientific_name varchar, threshold double, target_precision double, intercept double,
        slope double, verified integer, correct integer, note varchar, created_at timestamp)""")


def calibrate_species(project: str | Path | ProjectStore, species: str, target_precision: float = 0.9,
                      run_id: str | None = None, bins: int = 10, save: bool = True):
    """Precision per score bin and the calibrated threshold of one species from its verified detections; the
    threshold is saved in the project's ``thresholds`` table (exports can use it). Returns (Calibration, bins)."""
    with _Opened(project, write=save) as store:
        run_id = store.default_run(run_id)
        verified = store.con.execute("""
            select s.score, l.label from labels l
            join windows w on w.run_id = l.run_id and w.file_id = l.file_id and abs(w.start_s - l.start_s) < 1e-3
            join classes c on c.run_id = l.run_id and c.scientific_name = l.scientific_name
            join scores s on s.run_id = l.run_id and s.file_id = l.file_id and s.window_index = w.window_index
                         and s.class_index = c.class_index
            where l.run_id = ? and l.scientific_name = ?""", [run_id, species]).df()
        if verified.empty:
            raise ConfigError(f"no verified detection of '{species}' yet: review its detections first "
                              "(mark them positive or negative)")
        calibration = calibrate_threshold(verified["score"], verified["label"].tolist(), target_precision, species)
        table = precision_by_score_bin(verified["score"], verified["label"].tolist(), bins=bins)
        if save:
            _ensure_thresholds_table(store)
            store.con.execute("delete from thresholds where run_id = ? and scientific_name = ?", [run_id, species])
            c = calibration
            store.con.execute("insert into thresholds values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              [run_id, species, c.threshold, c.target_precision, c.intercept, c.slope, c.verified,
                               c.correct, c.note, datetime.now()])
        return calibration, table


def species_thresholds(project: str | Path | ProjectStore, run_id: str | None = None) -> dict[str, float]:
    """Calibrated thresholds saved for the run's species (those that reached their target)."""
    with _Opened(project) as store:
        run_id = store.default_run(run_id)
        exists = store.con.execute("select 1 from information_schema.tables where table_name = 'thresholds'").fetchone()
        if not exists:
            return {}
        rows = store.con.execute("select scientific_name, threshold from thresholds where run_id = ? "
                                 "and threshold is not null", [run_id]).fetchall()
        return {name: float(t) for name, t in rows}


def calibrated_filter(flt, project: str | Path | ProjectStore, run_id: str | None = None):
    """``flt`` with each calibrated species' threshold in place of ``min_conf`` (others keep ``min_conf``)."""
    import dataclasses

    found = species_thresholds(project, run_id)
    return dataclasses.replace(flt, species_min_conf=tuple(sorted(found.items()))) if found else flt


# --- your own classifier --------------------------------------------------------------------------------------
def training_set(project: str | Path | ProjectStore, run_id: str | None = None, classes: Sequence[str] | None = None,
                 random_negatives: int = 0, seed: int = 0) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """(vectors, labels, index rows) of the labelled windows: positives per class, windows marked negative (and
    not positive for another class) as negatives, plus ``random_negatives`` unlabelled windows drawn at random."""
    with _Opened(project) as store:
        run_id = store.default_run(run_id)
        index = sync_index(store, run_id)
        table = labels(store, run_id)
        table = table[(table["window_index"] >= 0) & (table["label"] != "unsure")]
        if classes:
            table = table[table["class_name"].isin(list(classes)) | (table["label"] == "negative")]
        if table.empty and not random_negatives:
            raise ConfigError("the project has no labels yet: mark windows as positive (with a class name) or "
                              "negative first")
        per_window: dict[tuple[int, int], list[str]] = {}
        for row in table.itertuples():
            names = per_window.setdefault((int(row.file_id), int(row.window_index)), [])
            if row.label == "positive":
                names.append(row.class_name)
        keys = np.array(list(per_window), dtype=np.int64).reshape(-1, 2)
        rows = _rows_of(index, keys) if len(keys) else np.zeros(0, np.int64)
        y = [sorted(set(v)) for v in per_window.values()]
        if random_negatives:
            rng = np.random.default_rng(seed)
            free = np.setdiff1d(np.arange(index.count), rows)
            extra = np.sort(rng.choice(free, size=min(int(random_negatives), free.size), replace=False))
            rows = np.concatenate([rows, extra])
            y += [[] for _ in extra]
        vectors = np.asarray(index.vectors()[rows], dtype=np.float32) if len(rows) else np.zeros((0, index.dim), np.float32)
        return vectors, y, rows


def train_project_classifier(project: str | Path | ProjectStore, run_id: str | None = None,
                             classes: Sequence[str] | None = None, random_negatives: int = 0, probe_type: str = "linear",
                             seed: int = 0):
    """A classifier trained on the run's labelled windows (see :func:`training_set`)."""
    from rl_core.custom_classifier import train_classifier

    with _Opened(project) as store:
        run_id = store.default_run(run_id)
        vectors, y, _rows = training_set(store, run_id, classes, random_negatives, seed)
        if not any(y):
            raise ConfigError("no positive labels in the project: mark at least 2 windows as positive for a class name")
        model = store.run_settings(run_id)["model"]
        return train_classifier(vectors, y, model, classes=list(classes) if classes else None,
                                probe_type=probe_type, seed=seed)


def apply_classifier(project: str | Path | ProjectStore, classifier, run_id: str | None = None, top_n: int = 100,
                     class_name: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Score every window of the run; returns the ``top_n`` ranked windows of one class (its first by default)
    with any verdict already given, and the full score vector of that class in index row order."""
    with _Opened(project) as store:
        run_id = store.default_run(run_id)
        index = sync_index(store, run_id)
        classifier.check_backbone(store.run_settings(run_id)["model"], dim=index.dim)
        name = class_name or classifier.classes[0]
        if name not in classifier.classes:
            raise ConfigError(f"the classifier has no class '{name}' (it has {classifier.classes})")
        scores = classifier.scores(index.vectors())[:, classifier.classes.index(name)]
        order = np.argsort(-scores, kind="stable")[: max(1, int(top_n))]
        table = _window_table(store, run_id, np.asarray(index.keys()[order]))
        table["score"] = scores[order][table.pop("order").to_numpy()]
        table.insert(3, "class_name", name)
        done = labels(store, run_id, name)
        verdict = {(int(f), round(float(s), 3)): v for f, s, v in zip(done["file_id"], done["start_s"], done["label"])}
        table["label"] = [verdict.get((int(f), round(float(s), 3)), "") for f, s in zip(table["file_id"], table["start_s"])]
        return table.reset_index(drop=True), scores


def suggest_to_label(project: str | Path | ProjectStore, classifier, run_id: str | None = None, n: int = 10,
                     class_name: str | None = None) -> pd.DataFrame:
    """Next windows to label for one class: the top-scored unlabelled ones and the most uncertain (``why`` says which)."""
    from rl_core.custom_classifier import suggest_next

    with _Opened(project) as store:
        run_id = store.default_run(run_id)
        index = sync_index(store, run_id)
        name = class_name or classifier.classes[0]
        _table, scores = apply_classifier(store, classifier, run_id, top_n=1, class_name=name)
        done = labels(store, run_id)
        done = done[done["window_index"] >= 0]
        labelled = np.zeros(index.count, dtype=bool)
        if len(done):
            labelled[_rows_of(index, done[["file_id", "window_index"]].to_numpy(np.int64))] = True
        picks = suggest_next(scores, labelled, n=n)
        rows = np.concatenate([picks["top"], picks["uncertain"]])
        table = _window_table(store, run_id, np.asarray(index.keys()[rows]))
        order = table.pop("order").to_numpy()
        table["score"] = scores[rows][order]
        table["why"] = np.where(order < len(picks["top"]), "top unlabelled", "uncertain")
        table.insert(3, "class_name", name)
        return table.reset_index(drop=True)


def window_keys(project: str | Path | ProjectStore, clips: Sequence[QueryClip | str],
                run_id: str | None = None) -> pd.DataFrame:
    """``file_id`` / ``window_index`` rows of stored windows named as ``FILE#WINDOW`` (checked against the run)."""
    with _Opened(project) as store:
        run_id = store.default_run(run_id)
        rows = []
        for clip in clips:
            clip = QueryClip.parse(clip) if isinstance(clip, str) else clip
            if clip.file is None or clip.window_index is None:
                raise ConfigError(f"{clip.describe()}: name a window as FILE#WINDOW_INDEX")
            file_id, rel = _find_file(store, run_id, clip.file)
            if not store.con.execute("select 1 from windows where run_id = ? and file_id = ? and window_index = ?",
                                     [run_id, file_id, clip.window_index]).fetchall():
                raise ConfigError(f"{rel} has no window {clip.window_index} in run {run_id}")
            rows.append({"file_id": file_id, "window_index": int(clip.window_index)})
        return pd.DataFrame(rows)


def store_classifier_scores(project: str | Path | ProjectStore, classifier, name: str, run_id: str | None = None,
                            floor: float = 0.5) -> int:
    """Score every window of the run and keep scores >= ``floor`` in the ``custom_scores`` table (replacing this
    classifier's earlier ones); returns how many were stored."""
    with _Opened(project, write=True) as store:
        run_id = store.default_run(run_id)
        index = sync_index(store, run_id)
        classifier.check_backbone(store.run_settings(run_id)["model"], dim=index.dim)
        scores = classifier.scores(index.vectors())
        rows, cols = np.nonzero(scores >= floor)
        keys = np.asarray(index.keys()[rows]) if len(rows) else np.zeros((0, 2), np.int64)
        frame = pd.DataFrame({"run_id": run_id, "classifier": name, "file_id": keys[:, 0],
                              "window_index": keys[:, 1].astype(np.int32),
                              "class_name": [classifier.classes[c] for c in cols],
                              "score": scores[rows, cols].astype(np.float32)})
        store.con.execute("""create table if not exists custom_scores(run_id varchar, classifier varchar,
                             file_id bigint, window_index integer, class_name varchar, score float)""")
        with store.transaction(cursor=True) as con:
            con.execute("delete from custom_scores where run_id = ? and classifier = ?", [run_id, name])
            con.register("new_custom", frame)
            con.execute("insert into custom_scores by name select * from new_custom")
        return len(frame)


def write_clip(path: str | Path, start_s: float, end_s: float, out_path: str | Path) -> Path:
    """The ``start_s``-``end_s`` seconds of a recording as a mono 16-bit WAV at its own rate (for listening)."""
    import soundfile as sf

    from rl_core.atomic import atomic_write
    from rl_core.audio import audio_info, load_audio

    info = audio_info(path)
    try:
        audio, rate = sf.read(str(path), start=int(start_s * info.sample_rate), stop=int(end_s * info.sample_rate),
                              dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
    except (RuntimeError, sf.LibsndfileError):  # formats soundfile cannot seek in: decode all, then cut
        audio, rate = load_audio(path)
        audio = audio[int(start_s * rate):int(end_s * rate)]
    with atomic_write(Path(out_path), "wb") as handle:
        sf.write(handle, audio, rate, subtype="PCM_16", format="WAV")
    return Path(out_path)
