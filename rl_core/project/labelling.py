"""Labels, review and calibration, and your own classifier inside an archive project (one run at a time).

* :func:`add_labels` / :func:`labels` store verdicts (positive / negative / unsure) in the project's
  ``labels`` table; :func:`review_queue` and :func:`calibrate_species` turn verified detections into a
  per-species threshold kept in the ``thresholds`` table, which exports can use (:func:`calibrated_filter`);
* :func:`train_project_classifier` trains a :mod:`rl_core.custom_classifier` probe on the labelled windows and
  :func:`apply_classifier` ranks every window of the run by it (one class, or each window's best class).

The vectors the classifier sees are the search index's (:func:`rl_core.project.search.sync_index`:
L2-normalised, float16), which the classifier normalises the same way when it is applied to a fresh recording.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from rl_core.errors import ConfigError
from rl_core.project.search import OpenedProject, index_rows, sync_index, window_table
from rl_core.project.store import ProjectStore
from rl_core.review import VERDICTS, calibrate_threshold, precision_by_score_bin, review_sample

#: where a label came from (the tab's list it was marked in, or the CLI's --source)
SOURCES = ("search", "review", "classifier", "map")


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
    with OpenedProject(project, write=True) as store:
        run_id = store.default_run(run_id)
        if "start_s" not in frame.columns:
            keys = np.array([[int(f), int(w)] for f, w in zip(frame["file_id"], frame["window_index"])], dtype=np.int64)
            frame = window_table(store, run_id, keys)
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
    with OpenedProject(project) as store:
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
    with OpenedProject(project) as store:
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
    with OpenedProject(project, write=save) as store:
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
    with OpenedProject(project) as store:
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
    with OpenedProject(project) as store:
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
        rows = index_rows(index, keys) if len(keys) else np.zeros(0, np.int64)
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

    with OpenedProject(project) as store:
        run_id = store.default_run(run_id)
        vectors, y, _rows = training_set(store, run_id, classes, random_negatives, seed)
        if not any(y):
            raise ConfigError("no positive labels in the project: mark at least 2 windows as positive for a class name")
        model = store.run_settings(run_id)["model"]
        return train_classifier(vectors, y, model, classes=list(classes) if classes else None,
                                probe_type=probe_type, seed=seed)


def _class_scores(store: ProjectStore, classifier, index, run_id: str,
                  class_name: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(score, class index) of every index row: the score of ``class_name``, or of each row's best class."""
    classifier.check_backbone(store.run_settings(run_id)["model"], dim=index.dim)
    if class_name and class_name not in classifier.classes:
        raise ConfigError(f"the classifier has no class '{class_name}' (it has {', '.join(classifier.classes)})")
    every = classifier.scores(index.vectors())
    if class_name:
        column = classifier.classes.index(class_name)
        return every[:, column], np.full(len(every), column)
    best = every.argmax(axis=1)
    return np.take_along_axis(every, best[:, None], axis=1)[:, 0], best


def _with_verdicts(store: ProjectStore, run_id: str, table: pd.DataFrame) -> pd.DataFrame:
    """``label``: the verdict already given on each row's window for the row's ``class_name`` (empty if none)."""
    done = labels(store, run_id)
    verdict = {(int(f), round(float(s), 3), c): v
               for f, s, c, v in zip(done["file_id"], done["start_s"], done["class_name"], done["label"])}
    table["label"] = [verdict.get((int(f), round(float(s), 3), c), "")
                      for f, s, c in zip(table["file_id"], table["start_s"], table["class_name"])]
    return table


def apply_classifier(project: str | Path | ProjectStore, classifier, run_id: str | None = None, top_n: int = 100,
                     class_name: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Score every window of the run; returns the ``top_n`` windows ranked by ``class_name``'s score, or (no
    class given) by each window's best class, named in ``class_name``, with any verdict already given; and the
    ranking score of every window in index row order."""
    with OpenedProject(project) as store:
        run_id = store.default_run(run_id)
        index = sync_index(store, run_id)
        scores, best = _class_scores(store, classifier, index, run_id, class_name)
        top_n = max(1, min(int(top_n), len(scores)))
        # the top_n by a linear-time partition, then only those sorted (a full sort of a million costs ~0.1 s)
        top = np.argpartition(-scores, top_n - 1)[:top_n] if top_n < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        table = window_table(store, run_id, np.asarray(index.keys()[top]))
        rows = top[table.pop("order").to_numpy()]
        table["score"] = scores[rows]
        table.insert(3, "class_name", np.asarray(classifier.classes, dtype=object)[best[rows]])
        return _with_verdicts(store, run_id, table).reset_index(drop=True), scores


def suggest_to_label(project: str | Path | ProjectStore, classifier, run_id: str | None = None, n: int = 10,
                     class_name: str | None = None) -> pd.DataFrame:
    """Next windows to label for one class (or by each window's best class): the top-scored unlabelled ones and
    the most uncertain (``why`` says which)."""
    from rl_core.custom_classifier import suggest_next

    with OpenedProject(project) as store:
        run_id = store.default_run(run_id)
        index = sync_index(store, run_id)
        scores, best = _class_scores(store, classifier, index, run_id, class_name)
        done = labels(store, run_id)
        done = done[done["window_index"] >= 0]
        labelled = np.zeros(index.count, dtype=bool)
        if len(done):
            labelled[index_rows(index, done[["file_id", "window_index"]].to_numpy(np.int64))] = True
        picks = suggest_next(scores, labelled, n=n)
        rows = np.concatenate([picks["top"], picks["uncertain"]])
        table = window_table(store, run_id, np.asarray(index.keys()[rows]))
        order = table.pop("order").to_numpy()
        table["score"] = scores[rows][order]
        table["why"] = np.where(order < len(picks["top"]), "top unlabelled", "uncertain")
        table.insert(3, "class_name", np.asarray(classifier.classes, dtype=object)[best[rows][order]])
        return table.reset_index(drop=True)


def store_classifier_scores(project: str | Path | ProjectStore, classifier, name: str, run_id: str | None = None,
                            floor: float = 0.5) -> int:
    """Score every window of the run and keep scores >= ``floor`` in the ``custom_scores`` table (replacing this
    classifier's earlier ones); returns how many were stored."""
    with OpenedProject(project, write=True) as store:
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


