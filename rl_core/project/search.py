"""Find similar calls inside an archive project.

Everything here works on one run of a project (its model, hop and stored window embeddings):

* :func:`sync_index` keeps a :class:`rl_core.similarity.WindowIndex` per run in ``search/<run_id>/``, adding
  only the embedding parts committed since the last sync (``parts.json`` lists those indexed), so a growing
  project never rebuilds it;
* :func:`search` embeds query clips (an audio file, a time range of a project file, or a stored window)
  through the run's model and recording path, averages them, and returns the nearest windows with their file,
  times, folder and date, optionally filtered by folder and date range.

Labels, review, calibration and your own classifier are :mod:`rl_core.project.labelling`; the map of a
project's windows is :mod:`rl_core.project.window_map`. The vectors all of them use are the index's
(L2-normalised, float16).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from rl_core.atomic import write_text_atomic
from rl_core.errors import ConfigError
from rl_core.project.store import EMBEDDINGS_DIR, ProjectStore
from rl_core.similarity import WindowIndex, normalise

log = logging.getLogger(__name__)

SEARCH_DIR = "search"
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


class OpenedProject:
    """``with OpenedProject(project) as store``: opens a folder (closing it after), or passes a store through."""

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
    with OpenedProject(project) as store:
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


def window_table(store: ProjectStore, run_id: str, keys: np.ndarray) -> pd.DataFrame:
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


def index_rows(index: WindowIndex, keys: np.ndarray) -> np.ndarray:
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
    with OpenedProject(project) as store:
        run_id = store.default_run(run_id)
        settings = store.run_settings(run_id)
        index = sync_index(store, run_id)
        window_s = float(settings["window_s"] or 0.0)
        vectors, stored_keys, files = [], [], {}
        for clip in clips:
            clip = QueryClip.parse(clip) if isinstance(clip, str) else clip
            if clip.path:
                vectors.append(_embed_audio_clip(clip.path, settings, window_s, model))
                continue
            if clip.file not in files:  # a map selection names many windows of few files
                files[clip.file] = _find_file(store, run_id, clip.file)
            file_id, rel = files[clip.file]
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
            stored_keys.append(keys.reshape(-1, 2))
        if stored_keys:  # one lookup for every stored clip: index_rows reads all the index's keys
            rows = index_rows(index, np.concatenate(stored_keys))
            ends = np.cumsum([len(k) for k in stored_keys])
            for part in np.split(rows, ends[:-1]):
                vectors.append(np.asarray(index.vectors()[np.sort(part)], dtype=np.float32).mean(axis=0))
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
    with OpenedProject(project) as store:
        run_id = store.default_run(run_id)
        index = sync_index(store, run_id)
        query = embed_query(store, clips, run_id, model=model)
        lo = parse_date(date_from, "from") if date_from else None
        hi = parse_date(date_to, "to") + pd.Timedelta(days=1) if date_to else None
        filtered = bool(folders) or lo is not None or hi is not None
        k = min(index.count, top_n if not filtered else max(top_n * 20, 1000))
        while True:
            hits = index.search(query, top_n=k)[0]
            table = window_table(store, run_id, hits.keys)
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


def parse_date(text: str, which: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(str(text).strip()).normalize()
    except (ValueError, TypeError):
        raise ConfigError(f"the '{which}' date '{text}' is not a date: write it as YYYY-MM-DD") from None


def window_keys(project: str | Path | ProjectStore, clips: Sequence[QueryClip | str],
                run_id: str | None = None) -> pd.DataFrame:
    """``file_id`` / ``window_index`` rows of stored windows named as ``FILE#WINDOW`` (checked against the run)."""
    with OpenedProject(project) as store:
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
