"""Files written from analysed recordings: predictions CSV, Raven selection tables, Audacity labels, clips of
detections and the window-embeddings ``.npz`` (one writer per format; the layout of the npz is in the README).

Every writer takes ``rl_core.inference.RecordingResult`` objects; files are written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd

from rl_core.atomic import atomic_write
from rl_core.audio import AudioInfo, audio_info
from rl_core.csv_safety import spreadsheet_safe
from rl_core.errors import ConfigError
from rl_core.inference import PREDICTION_COLUMNS, RecordingResult, pool_windows, unique_names

NPZ_KEYS = ("embeddings", "file_index", "files", "start_s", "end_s", "model", "layer")


def settings_comment(settings: dict[str, Any] | None) -> str:
    """``# key: value`` lines that head an export with the settings that made it (read back with ``comment="#"``)."""
    return "".join(f"# {key}: {value}\n" for key, value in (settings or {}).items())


def predictions_csv(results: Iterable[RecordingResult], k: int = 5, min_score: float = 0.0,
                    settings: dict[str, Any] | None = None, extra: Sequence[pd.DataFrame] | None = None) -> str:
    """The predictions of several files as one CSV (columns ``PREDICTION_COLUMNS``; call detectors: one row per
    call with its frequencies and probabilities, ``min_score`` on the detection probability).

    ``settings``: written first as ``# key: value`` lines (pandas: ``read_csv(path, comment="#")``); ``extra``:
    more rows with the same columns (a custom classifier's), sorted in beside the model's by file and time.
    """
    tables = [r.calls_table(min_score) if r.calls is not None else r.top_k_table(k, min_score)
              for r in results if r.calls is not None or r.has_scores]
    tables += list(extra or [])
    frame = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=PREDICTION_COLUMNS)
    if extra:
        frame = frame.sort_values(["file", "start_s"], kind="stable")
    return settings_comment(settings) + spreadsheet_safe(frame).to_csv(index=False)


#: BirdNET-Analyzer's selection-table columns (Raven Pro reads the first seven; the rest are annotations)
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                 "Common Name", "Species Code", "Scientific Name", "Confidence", "Begin Path", "Begin File",
                 "File Offset (s)")
RAVEN_HEADER = "\t".join(RAVEN_COLUMNS) + "\n"
_EBIRD_CODES: dict[str, str] | None = None


def species_code(scientific: str) -> str:
    """The eBird code BirdNET-Analyzer writes (from its wheel's taxonomy file), else the scientific name."""
    global _EBIRD_CODES
    if _EBIRD_CODES is None:
        import json

        from rl_core.datasets_bundled import package_dir

        root = package_dir("birdnet_analyzer")
        path = root / "eBird_taxonomy_codes_2024E.json" if root else None
        table = json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else {}
        _EBIRD_CODES = {key.split("_", 1)[0]: code for key, code in table.items()}
    return _EBIRD_CODES.get(scientific, scientific)


def raven_lines(detections: pd.DataFrame, start_id: int = 1, offset_s: float = 0.0) -> list[str]:
    """Selection-table lines (no header) from rows with ``start_s, end_s, low_hz, high_hz, scientific_name,
    common_name, score, path`` (Begin Path; Begin File is its name). Begin/End Time are shifted by ``offset_s`` (a
    combined table of several files); File Offset (s) stays the time within the file."""
    return [f"{i}\tSpectrogram 1\t1\t{r.start_s + offset_s:.4f}\t{r.end_s + offset_s:.4f}\t{r.low_hz:.0f}\t"
            f"{r.high_hz:.0f}\t{r.common_name}\t{species_code(r.scientific_name)}\t{r.scientific_name}\t"
            f"{r.score:.4f}\t{r.path}\t{Path(str(r.path)).name}\t{r.start_s:.4f}\n"
            for i, r in enumerate(detections.itertuples(index=False), start=start_id)]


def _with_extra(rows: pd.DataFrame, extra: pd.DataFrame | None) -> pd.DataFrame:
    """``rows`` and more rows of the same recording (a custom classifier's), in time order."""
    if extra is None or extra.empty:
        return rows
    return pd.concat([rows, extra], ignore_index=True).sort_values("start_s", kind="stable")


def raven_selection_table(result: RecordingResult, k: int = 1, min_score: float = 0.1,
                          extra: pd.DataFrame | None = None) -> str:
    """A Raven Pro selection table (tab-separated .txt) of one recording: one selection per window and class above
    ``min_score`` over the full band; for call detectors one per call with detection probability >= ``min_score``,
    with its own frequency box. ``extra``: more window rows (``top_k_table`` columns, a custom classifier's), over
    the full band too. Files are named as uploaded (``result.name``)."""
    high = result.sample_rate / 2
    if result.calls is not None:
        calls = result.calls_table(min_score)
        rows = calls.assign(low_hz=calls["low_freq_hz"], high_hz=calls["high_freq_hz"], score=calls["detection_prob"])
        if extra is not None and not extra.empty:
            rows = _with_extra(rows, extra.assign(low_hz=0.0, high_hz=high))
    else:
        rows = _with_extra(result.top_k_table(k, min_score), extra).assign(low_hz=0.0, high_hz=high)
    return RAVEN_HEADER + "".join(raven_lines(rows.assign(path=result.name)))


def audacity_lines(detections: pd.DataFrame) -> str:
    """Audacity label-track lines (File > Import > Labels) in BirdNET-Analyzer's form:
    ``start<TAB>end<TAB>Scientific, Common<TAB>confidence``, from rows with start_s, end_s, scientific_name,
    common_name and score (one recording's windows, or a project's detections of one file)."""
    return "".join(f"{r.start_s:.3f}\t{r.end_s:.3f}\t{r.scientific_name}, {r.common_name}\t{r.score:.4f}\n"
                   for r in detections.itertuples(index=False))


def audacity_labels(result: RecordingResult, k: int = 1, min_score: float = 0.1,
                    extra: pd.DataFrame | None = None) -> str:
    """The Audacity label track of one recording: its top-``k`` classes per window at or above ``min_score``, with
    ``extra`` rows (a custom classifier's) in time order."""
    return audacity_lines(_with_extra(result.top_k_table(k, min_score), extra))


class Clip(NamedTuple):
    """One detection to cut out of its recording: ``label`` names it in the zip."""

    path: Path
    file: str
    label: str
    start_s: float
    end_s: float


def _safe_part(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-." else "_" for c in text.strip())
    return "_".join(p for p in keep.split("_") if p)[:60] or "clip"


def clip_name(clip: Clip) -> str:
    """``species_file_time.wav``: e.g. ``Parus_major_dawn_0012.0s.wav``."""
    return f"{_safe_part(clip.label)}_{_safe_part(Path(clip.file).stem)}_{clip.start_s:06.1f}s.wav"


def write_clips_zip(clips: Sequence[Clip], path: str | Path, context_s: float = 1.0,
                    settings: dict[str, Any] | None = None) -> Path:
    """A zip of short 16-bit WAVs, one per clip (its window plus ``context_s`` on each side, native rate),
    named by :func:`clip_name`; ``settings`` go into ``settings.txt`` beside them. Written atomically."""
    import zipfile

    import soundfile as sf

    from rl_core.audio import read_segment

    if not clips:
        raise ConfigError("no detections selected to export as clips")
    path = Path(path)
    infos: dict[Path, AudioInfo] = {}
    names = unique_names([clip_name(c) for c in clips])
    with atomic_write(path, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        for clip, name in zip(clips, names):
            info = infos.setdefault(clip.path, audio_info(clip.path))
            audio, sr = read_segment(clip.path, clip.start_s - context_s, clip.end_s + context_s, info=info)
            buffer = io.BytesIO()
            sf.write(buffer, audio, sr, format="WAV", subtype="PCM_16")
            archive.writestr(name, buffer.getvalue())
        if settings:
            archive.writestr("settings.txt", settings_comment(settings))
    return path


def save_embeddings_npz(results: Sequence[RecordingResult], path: str | Path, model: str | None = None) -> Path:
    """Write the window embeddings of ``results`` in the one npz layout (module docstring), atomically."""
    results = [r for r in results if r.embeddings is not None]
    if not results:
        raise ConfigError("no window embeddings to save (every result was computed without embeddings)")
    dims = {r.embeddings.shape[1] for r in results}
    if len(dims) > 1:
        raise ConfigError(f"the results have different embedding sizes {sorted(dims)}: save them separately")
    path = Path(path)
    payload = {
        "embeddings": np.concatenate([r.embeddings for r in results]).astype(np.float32, copy=False),
        "file_index": np.concatenate([np.full(r.num_windows, i, dtype=np.int32) for i, r in enumerate(results)]),
        "files": np.array(unique_names([r.name for r in results])),
        "start_s": np.concatenate([r.starts for r in results]).astype(np.float64),
        "end_s": np.concatenate([r.ends for r in results]).astype(np.float64),
        "model": np.array(model or results[0].model),
        "layer": np.array(results[0].layer),
    }
    with_calls = [(i, r) for i, r in enumerate(results) if r.call_features is not None]
    if with_calls:  # call detectors: one feature vector per call, its file and its time
        payload["call_features"] = np.concatenate([r.call_features for _, r in with_calls]).astype(np.float32)
        payload["call_file_index"] = np.concatenate([np.full(len(r.calls), i, np.int32) for i, r in with_calls])
        payload["call_start_s"] = np.concatenate([r.calls["start_s"].to_numpy(np.float64) for _, r in with_calls])
        payload["call_end_s"] = np.concatenate([r.calls["end_s"].to_numpy(np.float64) for _, r in with_calls])
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **payload)
    return path


def load_embeddings_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read a file written by ``save_embeddings_npz``; a file without the layout's keys is refused by name."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            content = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path.name}: not a readable .npz file ({err})") from None
    missing = [key for key in NPZ_KEYS if key not in content]
    if missing:
        raise ConfigError(f"{path.name}: not a window-embeddings file (missing {', '.join(missing)})")
    return content


def pooled_file_embeddings(
    npz: str | Path | dict[str, np.ndarray], pooling: str = "mean"
) -> tuple[list[str], np.ndarray]:
    """The per-file vectors of a window-embeddings file: (file names, (F, D) mean or max of each file's rows)."""
    data = load_embeddings_npz(npz) if not isinstance(npz, dict) else npz
    files = [str(f) for f in data["files"]]
    rows = [pool_windows(data["embeddings"][data["file_index"] == i], pooling) for i in range(len(files))]
    return files, np.stack(rows)
