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


def raven_selection_table(result: RecordingResult, k: int = 1, min_score: float = 0.1) -> str:
    """A Raven Pro selection table (tab-separated .txt): one selection per window and class above ``min_score``;
    for call detectors one per call with detection probability >= ``min_score``, with its own frequency box."""
    out = io.StringIO()
    out.write("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\t"
              "Species Code\tCommon Name\tConfidence\tBegin File\n")
    if result.calls is not None:
        for i, call in enumerate(result.calls_table(min_score).itertuples(index=False), start=1):
            out.write(f"{i}\tSpectrogram 1\t1\t{call.start_s:.4f}\t{call.end_s:.4f}\t{call.low_freq_hz:.0f}\t"
                      f"{call.high_freq_hz:.0f}\t{call.scientific_name}\t{call.common_name}\t"
                      f"{call.detection_prob:.4f}\t{result.name}\n")
        return out.getvalue()
    table = result.top_k_table(k, min_score)
    high = result.sample_rate / 2
    for i, row in enumerate(table.itertuples(index=False), start=1):
        out.write(f"{i}\tSpectrogram 1\t1\t{row.start_s:.3f}\t{row.end_s:.3f}\t0\t{high:.0f}\t"
                  f"{row.scientific_name}\t{row.common_name}\t{row.score:.4f}\t{row.file}\n")
    return out.getvalue()


def audacity_lines(detections: pd.DataFrame) -> str:
    """Audacity label-track lines (File > Import > Labels) in BirdNET-Analyzer's form:
    ``start<TAB>end<TAB>Scientific, Common<TAB>confidence``, from rows with start_s, end_s, scientific_name,
    common_name and score (one recording's windows, or a project's detections of one file)."""
    return "".join(f"{r.start_s:.3f}\t{r.end_s:.3f}\t{r.scientific_name}, {r.common_name}\t{r.score:.4f}\n"
                   for r in detections.itertuples(index=False))


def audacity_labels(result: RecordingResult, k: int = 1, min_score: float = 0.1) -> str:
    """The Audacity label track of one recording: its top-``k`` classes per window at or above ``min_score``."""
    return audacity_lines(result.top_k_table(k, min_score))


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
