"""A project's store: DuckDB tables (``project.duckdb``) plus Parquet embedding parts (``embeddings/``).

Layout of a project folder, readable with DuckDB or pandas alone::

    project.duckdb                runs, files, file_runs, windows, scores, classes, failures, labels,
                                  embedding_parts; views detections and failures_view
    embeddings/<run_id>/part-000001.parquet   file_id, window_index, embedding (float16 x D), zstd

Why Parquet float16 for embeddings (measured on real BirdNET embeddings, bench/RESULTS.md): DuckDB's
FLOAT[1024] column took ~5.0 kB per window, Parquet float32+zstd 3.9 kB and Parquet float16+zstd 1.6 kB, and
the top-10 cosine neighbours in float16 were 99% those in float32; DuckDB reads the Parquet parts directly
(``select * from 'embeddings/*/*.parquet'``).

Atomicity: the driver writes a batch of finished files as one Parquet part (temporary file, then rename),
then commits every row of those files (files, file_runs, windows, scores, the part's name) in ONE DuckDB
transaction. A crash before the commit leaves an unlisted part, which the next open deletes; a file's rows
are therefore all there or not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from rl_core.errors import ConfigError, MissingDependencyError, RLCoreError

log = logging.getLogger(__name__)

DB_FILE = "project.duckdb"
EMBEDDINGS_DIR = "embeddings"
SCHEMA_VERSION = 1
#: raw sigmoid scores at or above this are stored; with it every min_conf >= 0.13 is exact at any sensitivity
#: in [0.5, 1.5], and every min_conf >= 0.001 at sensitivity 1.0 (about 100 classes per BirdNET window)
DEFAULT_SCORE_FLOOR = 0.001

_SCHEMA = """
create table if not exists meta(key varchar primary key, value varchar);
create table if not exists runs(
    run_id varchar primary key, model varchar, hop_s double, window_s double, precision varchar,
    score_floor double, embedding_dtype varchar, settings varchar, rl_core_version varchar, created_at timestamp);
create table if not exists files(
    file_id bigint primary key, path varchar, root varchar, rel_path varchar, folder varchar,
    recorded_at timestamp, time_source varchar);
create table if not exists file_runs(
    run_id varchar, file_id bigint, size bigint, mtime_ns bigint, duration_s double, sample_rate integer,
    channels integer, n_windows integer, part varchar, finished_at timestamp);
create table if not exists windows(run_id varchar, file_id bigint, window_index integer, start_s double, end_s double);
create table if not exists scores(run_id varchar, file_id bigint, window_index integer, class_index smallint, score float);
create table if not exists classes(run_id varchar, class_index smallint, scientific_name varchar, common_name varchar);
create table if not exists failures(
    run_id varchar, file_id bigint, path varchar, size bigint, mtime_ns bigint, error_type varchar,
    reason varchar, attempts integer, failed_at timestamp);
create table if not exists embedding_parts(run_id varchar, part varchar, n_rows bigint, created_at timestamp);
create table if not exists labels(
    run_id varchar, file_id bigint, start_s double, end_s double, scientific_name varchar, label varchar,
    source varchar, created_at timestamp);
create or replace view detections as
    select s.run_id, r.model, f.file_id, f.path, f.rel_path, f.folder, f.recorded_at, w.window_index, w.start_s, w.end_s,
           s.class_index, c.scientific_name, c.common_name, s.score
    from scores s
    join windows w using (run_id, file_id, window_index)
    join files f using (file_id)
    join runs r using (run_id)
    join classes c using (run_id, class_index);
"""


def _import_duckdb():
    try:
        import duckdb
    except ImportError:
        raise MissingDependencyError("projects need duckdb: pip install duckdb==2.0.0 pyarrow==26.0.0") from None
    return duckdb


@dataclass(frozen=True)
class RunSettings:
    """Everything that changes a run's results; its hash is the run id."""

    model: str
    hop_s: float | None = None
    precision: str = "float32"
    score_floor: float = DEFAULT_SCORE_FLOOR
    embeddings: bool = True

    def __post_init__(self) -> None:
        if self.hop_s is not None and not self.hop_s > 0:
            raise ConfigError(f"--hop must be a positive number of seconds, got {self.hop_s}")
        if not 0.0 < self.score_floor < 1.0:
            raise ConfigError(f"score floor must be in (0, 1), got {self.score_floor}")
        if self.precision not in ("float32", "bfloat16"):
            raise ConfigError(f"precision must be float32 or bfloat16, got {self.precision!r}")

    @property
    def run_id(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return f"{self.model}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class FileTask:
    """One recording to analyse (what the driver sends to a worker)."""

    file_id: int
    path: str
    root: str
    rel_path: str
    folder: str
    size: int
    mtime_ns: int


@dataclass
class FileOutcome:
    """What a worker sends back for one recording: arrays on success, a reason on failure."""

    task: FileTask
    ok: bool
    duration_s: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    window_s: float = 0.0
    starts: np.ndarray | None = None
    ends: np.ndarray | None = None
    score_window: np.ndarray | None = None   # (n,) window index of each stored score
    score_class: np.ndarray | None = None    # (n,) class index
    score_value: np.ndarray | None = None    # (n,) float32 sigmoid score >= floor
    embeddings: np.ndarray | None = None     # (windows, D) float16
    labels: tuple[str, ...] | None = None    # class names, sent once per worker process
    common_names: tuple[str, ...] | None = None
    error_type: str = ""
    reason: str = ""
    seconds: float = 0.0


def file_id_of(path: str) -> int:
    """A stable 60-bit id for an absolute path (the same on every engine and every run)."""
    return int(hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:15], 16)


def recorded_at(name: str) -> datetime | None:
    """Start time from a recorder's file name (AudioMoth ``20240515_063000``, Song Meter ``SITE_20240515_063000``)."""
    import re

    match = re.search(r"(?<!\d)(\d{4})[-_]?(\d{2})[-_]?(\d{2})[T_ -]?(\d{2})[-_:h]?(\d{2})[-_:m]?(\d{2})(?!\d)", name)
    if not match:
        return None
    try:
        return datetime(*map(int, match.groups()))
    except ValueError:
        return None


class ProjectLockedError(RLCoreError):
    """Another process is writing this project."""


class ProjectStore:
    """Open (or create) a project folder. One writer process at a time; readers use ``read_only=True``.

    ``shared=True`` reads a project that this same process may be writing (DuckDB refuses a read-only and a
    read-write connection to one file in one process): no schema change, no clean-up, no creation.
    """

    def __init__(self, folder: str | Path, read_only: bool = False, shared: bool = False) -> None:
        duckdb = _import_duckdb()
        self.folder = Path(folder).expanduser().absolute()
        self.read_only = read_only
        db = self.folder / DB_FILE
        if (read_only or shared) and not db.is_file():
            raise ConfigError(f"{self.folder} is not a project (no {DB_FILE}); create it with `rl-core analyse DIR --project {self.folder}`")
        if not read_only:
            if self.folder.exists() and not self.folder.is_dir():
                raise ConfigError(f"--project {self.folder} is a file, not a folder")
            self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(db), read_only=read_only)
        except duckdb.IOException as err:
            if "lock" in str(err).lower():
                raise ProjectLockedError(f"project {self.folder} is open for writing by another process "
                                         "(an analysis running?); wait for it to finish or stop it") from None
            raise ConfigError(f"cannot open project {self.folder}: {err}") from None
        if not read_only and not shared:
            self.con.execute(_SCHEMA)
            self.con.execute("insert or ignore into meta values ('schema_version', ?)", [str(SCHEMA_VERSION)])
            self._remove_orphan_parts()

    @contextlib.contextmanager
    def transaction(self, cursor: bool = False):
        """A DuckDB transaction: committed when the block ends, rolled back if it raises (nothing half-written).
        ``cursor=True`` runs it on a cursor of its own (for callers on other threads)."""
        con = self.con.cursor() if cursor else self.con
        con.execute("begin transaction")
        try:
            yield con
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        finally:
            if cursor:
                con.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.con.close()

    def __enter__(self) -> "ProjectStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- runs ------------------------------------------------------------------------------------------
    def ensure_run(self, settings: RunSettings, window_s: float | None = None) -> str:
        from rl_core import __version__

        run_id = settings.run_id
        if not self.con.execute("select 1 from runs where run_id = ?", [run_id]).fetchone():
            self.con.execute(
                "insert into runs values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, settings.model, settings.hop_s, window_s, settings.precision, settings.score_floor,
                 "float16" if settings.embeddings else None, json.dumps(asdict(settings), sort_keys=True),
                 __version__, datetime.now()],
            )
        return run_id

    def runs(self) -> pd.DataFrame:
        return self.con.execute("""
            select r.run_id, r.model, r.hop_s, r.window_s, r.precision, r.score_floor, r.created_at,
                   count(fr.file_id) as files_done, coalesce(sum(fr.duration_s), 0) / 3600 as audio_hours,
                   (select count(*) from failures f where f.run_id = r.run_id) as files_failed
            from runs r left join file_runs fr using (run_id)
            group by all order by r.created_at, r.run_id""").df()

    def run_settings(self, run_id: str) -> dict:
        row = self.con.execute("select settings, window_s from runs where run_id = ?", [run_id]).fetchone()
        if row is None:
            known = ", ".join(self.runs().run_id) or "none yet"
            raise ConfigError(f"project {self.folder} has no run '{run_id}' (runs: {known})")
        return {**json.loads(row[0]), "window_s": row[1], "run_id": run_id}

    def default_run(self, run_id: str | None = None) -> str:
        """``run_id`` if given, else the project's only (or latest) run."""
        if run_id:
            self.run_settings(run_id)
            return run_id
        row = self.con.execute("select run_id from runs order by created_at desc, run_id limit 1").fetchone()
        if row is None:
            raise ConfigError(f"project {self.folder} has no analysis yet: run `rl-core analyse DIR --project {self.folder}`")
        return row[0]

    # --- resume ---------------------------------------------------------------------------------------------
    def done_keys(self, run_id: str) -> dict[int, tuple[int, int]]:
        rows = self.con.execute("select file_id, size, mtime_ns from file_runs where run_id = ?", [run_id]).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def failed_keys(self, run_id: str) -> dict[int, tuple[int, int]]:
        rows = self.con.execute("select file_id, size, mtime_ns from failures where run_id = ?", [run_id]).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    # --- commit ---------------------------------------------------------------------------------------------
    def _part_dir(self, run_id: str) -> Path:
        return self.folder / EMBEDDINGS_DIR / run_id

    def _remove_orphan_parts(self) -> None:
        """Delete Parquet parts that no committed transaction lists (left by a crash before the commit)."""
        root = self.folder / EMBEDDINGS_DIR
        if not root.is_dir():
            return
        listed = {(r, p) for r, p in self.con.execute("select run_id, part from embedding_parts").fetchall()}
        for path in root.glob("*/*.parquet"):
            if (path.parent.name, path.name) not in listed:
                log.info("removing uncommitted embedding part %s", path)
                path.unlink()
        for tmp in root.glob("*/.*.tmp"):
            tmp.unlink()

    def commit(self, run_id: str, outcomes: Sequence[FileOutcome]) -> None:
        """Store finished files (and failures) in one transaction; their embeddings go to one new Parquet part."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from rl_core.atomic import atomic_write

        if not outcomes:
            return
        good = [o for o in outcomes if o.ok]
        bad = [o for o in outcomes if not o.ok]
        now = datetime.now()
        part_name = None
        with_emb = [o for o in good if o.embeddings is not None and len(o.embeddings)]
        emb_ids = {id(o) for o in with_emb}
        if with_emb:
            number = self.con.execute("select count(*) from embedding_parts where run_id = ?", [run_id]).fetchone()[0] + 1
            part_name = f"part-{number:06d}.parquet"
            while (self._part_dir(run_id) / part_name).exists():  # a leftover of a crash: never overwrite
                number += 1
                part_name = f"part-{number:06d}.parquet"
            emb = np.concatenate([o.embeddings for o in with_emb]).astype(np.float16)
            dim = emb.shape[1]
            table = pa.table({
                "file_id": pa.array(np.concatenate([np.full(len(o.embeddings), o.task.file_id, np.int64) for o in with_emb])),
                "window_index": pa.array(np.concatenate([np.arange(len(o.embeddings), dtype=np.int32) for o in with_emb])),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim),
            })
            with atomic_write(self._part_dir(run_id) / part_name, "wb") as handle:
                pq.write_table(table, handle, compression="zstd", row_group_size=65536)
        files = pd.DataFrame([{
            "file_id": o.task.file_id, "path": o.task.path, "root": o.task.root, "rel_path": o.task.rel_path,
            "folder": o.task.folder, "recorded_at": recorded_at(Path(o.task.path).name),
        } for o in outcomes])
        files["time_source"] = np.where(files["recorded_at"].isna(), "none", "file name")
        files["recorded_at"] = pd.to_datetime(files["recorded_at"])
        file_runs = pd.DataFrame([{
            "run_id": run_id, "file_id": o.task.file_id, "size": o.task.size, "mtime_ns": o.task.mtime_ns,
            "duration_s": o.duration_s, "sample_rate": o.sample_rate, "channels": o.channels,
            "n_windows": 0 if o.starts is None else len(o.starts),
            "part": part_name if id(o) in emb_ids else None, "finished_at": now,
        } for o in good], columns=["run_id", "file_id", "size", "mtime_ns", "duration_s", "sample_rate", "channels",
                                   "n_windows", "part", "finished_at"])
        windows = pd.DataFrame({
            "run_id": run_id,
            "file_id": np.concatenate([np.full(len(o.starts), o.task.file_id, np.int64) for o in good] or [np.zeros(0, np.int64)]),
            "window_index": np.concatenate([np.arange(len(o.starts), dtype=np.int32) for o in good] or [np.zeros(0, np.int32)]),
            "start_s": np.concatenate([o.starts for o in good] or [np.zeros(0)]),
            "end_s": np.concatenate([o.ends for o in good] or [np.zeros(0)]),
        })
        scored = [o for o in good if o.score_value is not None]
        scores = pd.DataFrame({
            "run_id": run_id,
            "file_id": np.concatenate([np.full(len(o.score_value), o.task.file_id, np.int64) for o in scored] or [np.zeros(0, np.int64)]),
            "window_index": np.concatenate([o.score_window for o in scored] or [np.zeros(0, np.int32)]).astype(np.int32),
            "class_index": np.concatenate([o.score_class for o in scored] or [np.zeros(0, np.int16)]).astype(np.int16),
            "score": np.concatenate([o.score_value for o in scored] or [np.zeros(0, np.float32)]).astype(np.float32),
        })
        failures = pd.DataFrame([{
            "run_id": run_id, "file_id": o.task.file_id, "path": o.task.path, "size": o.task.size,
            "mtime_ns": o.task.mtime_ns, "error_type": o.error_type, "reason": o.reason, "attempts": 1, "failed_at": now,
        } for o in bad], columns=["run_id", "file_id", "path", "size", "mtime_ns", "error_type", "reason", "attempts", "failed_at"])
        labelled = next((o for o in good if o.labels), None)
        try:
            with self.transaction() as con:
                ids = files["file_id"].tolist()
                con.execute("delete from files where file_id in (select unnest(?))", [ids])
                con.register("new_files", files)
                con.execute("insert into files by name select * from new_files")
                # a changed file (new size/mtime) replaces its earlier rows; a retried failure leaves the failures table
                prior = {r[0]: r[1] for r in con.execute(
                    "select file_id, attempts from failures where run_id = ? and file_id in (select unnest(?))", [run_id, ids]).fetchall()}
                for table in ("file_runs", "windows", "scores", "failures"):
                    con.execute(f"delete from {table} where run_id = ? and file_id in (select unnest(?))", [run_id, ids])
                if not failures.empty:
                    failures["attempts"] = [prior.get(i, 0) + 1 for i in failures["file_id"]]
                for name, frame in (("file_runs", file_runs), ("windows", windows), ("scores", scores), ("failures", failures)):
                    if not frame.empty:
                        con.register(f"new_{name}", frame)
                        con.execute(f"insert into {name} by name select * from new_{name}")
                if part_name:
                    con.execute("insert into embedding_parts values (?, ?, ?, ?)", [run_id, part_name, int(sum(len(o.embeddings) for o in with_emb)), now])
                if labelled is not None and not con.execute("select 1 from classes where run_id = ? limit 1", [run_id]).fetchone():
                    common = labelled.common_names or labelled.labels
                    con.register("new_classes", pd.DataFrame({
                        "run_id": run_id, "class_index": np.arange(len(labelled.labels), dtype=np.int16),
                        "scientific_name": list(labelled.labels), "common_name": list(common)}))
                    con.execute("insert into classes by name select * from new_classes")
        finally:
            for name in ("new_files", "new_file_runs", "new_windows", "new_scores", "new_failures", "new_classes"):
                with contextlib.suppress(Exception):
                    self.con.unregister(name)
        # embeddings of files replaced by this commit may sit in older parts: readers join on file_runs.part

    # --- reading ---------------------------------------------------------------------------------------------
    def summary(self, run_id: str) -> dict:
        done, hours, windows = self.con.execute(
            "select count(*), coalesce(sum(duration_s), 0) / 3600, coalesce(sum(n_windows), 0) from file_runs where run_id = ?",
            [run_id]).fetchone()
        failed = self.con.execute("select count(*) from failures where run_id = ?", [run_id]).fetchone()[0]
        return {"run_id": run_id, "files_done": int(done), "files_failed": int(failed), "audio_hours": float(hours),
                "windows": int(windows)}

    def failures(self, run_id: str | None = None) -> pd.DataFrame:
        if run_id is None:
            return self.con.execute("select * from failures order by run_id, path").df()
        return self.con.execute("select * from failures where run_id = ? order by path", [run_id]).df()

    def files(self, run_id: str) -> pd.DataFrame:
        return self.con.execute("""
            select f.file_id, f.path, f.root, f.rel_path, f.folder, f.recorded_at, f.time_source, fr.duration_s,
                   fr.sample_rate, fr.channels, fr.n_windows
            from file_runs fr join files f using (file_id) where fr.run_id = ? order by f.path""", [run_id]).df()

    def folders(self, run_id: str) -> list[str]:
        rows = self.con.execute("select distinct f.folder from file_runs fr join files f using (file_id) "
                                "where fr.run_id = ? order by 1", [run_id]).fetchall()
        return [r[0] for r in rows]

    def window_scores(self, run_id: str, raw_min: float = 0.0, folders: Sequence[str] | None = None,
                      files: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per stored (window, class) score >= ``raw_min`` with the columns DetectionFilter.apply takes."""
        where, params = ["s.run_id = ?", "s.score >= ?"], [run_id, float(raw_min)]
        if folders:
            where.append("f.folder in (select unnest(?))")
            params.append(list(folders))
        if files:
            where.append("(f.rel_path in (select unnest(?)) or f.path in (select unnest(?)))")
            params += [list(files), list(files)]
        return self.con.execute(f"""
            select f.rel_path as file, w.start_s, w.end_s, c.scientific_name, c.common_name, s.score,
                   f.path, f.folder, f.recorded_at, fr.duration_s, fr.sample_rate
            from scores s
            join windows w using (run_id, file_id, window_index)
            join files f using (file_id)
            join file_runs fr using (run_id, file_id)
            join classes c using (run_id, class_index)
            where {' and '.join(where)}
            order by f.path, w.start_s, s.score desc, c.scientific_name""", params).df()

    def embeddings(self, run_id: str) -> tuple[pd.DataFrame, np.ndarray]:
        """(file_id/window_index/start_s/end_s/path table, float32 (N, D) matrix) of the run's committed embeddings."""
        parts = [p for (p,) in self.con.execute(
            "select distinct part from file_runs where run_id = ? and part is not null order by 1", [run_id]).fetchall()]
        if not parts:
            return pd.DataFrame(columns=["file_id", "window_index", "start_s", "end_s", "path"]), np.zeros((0, 0), np.float32)
        paths = [str(self._part_dir(run_id) / p) for p in parts]
        rel = self.con.execute("""
            select e.file_id, e.window_index, w.start_s, w.end_s, f.path, e.embedding
            from read_parquet(?, filename = true) e
            join file_runs fr on fr.run_id = ? and fr.file_id = e.file_id and e.filename like '%' || fr.part
            join windows w on w.run_id = fr.run_id and w.file_id = e.file_id and w.window_index = e.window_index
            join files f on f.file_id = e.file_id
            order by f.path, e.window_index""", [paths, run_id]).df()
        matrix = np.stack(rel.pop("embedding").to_numpy()).astype(np.float32) if len(rel) else np.zeros((0, 0), np.float32)
        return rel, matrix


def scan_recordings(dirs: Iterable[str | Path], confine: bool = False) -> tuple[list[FileTask], dict[str, int]]:
    """Every recording under ``dirs`` (recursive, sorted); hidden and non-audio files are skipped and counted.

    ``confine``: skip (and count as ``outside``) files that are symlinks leading out of their folder (web app).
    """
    from rl_core.audio import SUPPORTED_EXTENSIONS

    tasks: dict[str, FileTask] = {}
    counts = {"audio": 0, "hidden": 0, "not_audio": 0, "outside": 0}
    for d in dirs:
        root = Path(d).expanduser().absolute()
        if not root.is_dir():
            if root.is_file() and root.suffix.lower() in SUPPORTED_EXTENSIONS:
                roots = [(root.parent, [root.name], [])]
            else:
                raise ConfigError(f"{d}: no such folder (give folders of recordings to analyse)")
        else:
            roots = None
        walker = roots if roots is not None else os.walk(root)
        base = root.parent if roots is not None else root
        for current, dirnames, filenames in walker:
            hidden_dirs = [n for n in dirnames if n.startswith(".")]
            counts["hidden"] += len(hidden_dirs)
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    counts["hidden"] += 1
                    continue
                if Path(name).suffix.lower() not in SUPPORTED_EXTENSIONS:
                    counts["not_audio"] += 1
                    continue
                path = os.path.join(current, name)
                if confine and not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(base)):
                    counts["outside"] += 1
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    counts["not_audio"] += 1
                    continue
                rel = os.path.relpath(path, base)
                folder = os.path.join(base.name, os.path.dirname(rel)).rstrip(os.sep) if roots is None else base.name
                tasks.setdefault(path, FileTask(file_id_of(path), path, str(base), rel, folder, st.st_size, st.st_mtime_ns))
    counts["audio"] = len(tasks)
    return [tasks[p] for p in sorted(tasks)], counts
