"""Run a model over whole recordings: windowed scores and embeddings, top-k tables, CSV and Raven exports."""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from rl_core.atomic import atomic_write
from rl_core.audio import RESAMPLE_TYPE, audio_info, iter_windows
from rl_core.errors import ConfigError
from rl_core.models.base import ModelBase

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ["file", "start_s", "end_s", "rank", "scientific_name", "common_name", "score"]
Progress = Callable[[float, str], None]


@dataclass
class FileResult:
    """Per-window outputs of one model on one recording."""

    file: Path
    duration_s: float
    sample_rate: int
    starts: np.ndarray
    ends: np.ndarray
    scores: np.ndarray | None
    embeddings: np.ndarray | None
    labels: list[str] | None
    common_names: list[str] | None
    #: optional boolean (C,) mask of classes to report (e.g. BirdNET's location/season filter)
    class_mask: np.ndarray | None = None
    #: call detectors (BatDetect2): one row per call (times, frequencies, probabilities; see the model's
    #: CALL_COLUMNS) and each call's feature vector (N, D) in the same order
    calls: pd.DataFrame | None = None
    call_features: np.ndarray | None = None

    def reported_scores(self) -> np.ndarray:
        """Scores with classes outside ``class_mask`` set to 0 (the stored scores stay complete)."""
        if self.scores is None:
            raise ValueError("this model has no classifier head: it gives embeddings, not species predictions")
        return self.scores if self.class_mask is None else np.where(self.class_mask[None, :], self.scores, 0.0)

    @property
    def num_windows(self) -> int:
        return int(self.starts.shape[0])

    def pooled_embedding(self) -> np.ndarray:
        """Mean of the window embeddings: one (D,) vector per file."""
        if self.embeddings is None:
            raise ValueError("this result was computed without embeddings (want_embeddings=False)")
        return self.embeddings.mean(axis=0)

    def top_k_table(self, k: int = 5, min_score: float = 0.0) -> pd.DataFrame:
        """Top-k classes per window with the CLI's columns."""
        scores = self.reported_scores()
        k = max(1, min(int(k), scores.shape[1]))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        rows = []
        for w in range(self.num_windows):
            for rank, idx in enumerate(order[w], start=1):
                score = float(scores[w, idx])
                if score < min_score:
                    continue
                rows.append((self.file.name, round(float(self.starts[w]), 3), round(float(self.ends[w]), 3), rank,
                             self.labels[idx], self.common_names[idx] if self.common_names else "", score))
        return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)

    def calls_table(self, min_score: float = 0.0) -> pd.DataFrame:
        """The detected calls with detection probability >= ``min_score`` (call detectors only)."""
        if self.calls is None:
            raise ValueError("this model does not detect calls: use top_k_table for per-window predictions")
        return self.calls[self.calls["detection_prob"] >= min_score].reset_index(drop=True)

    def file_summary(self, k: int = 5) -> pd.DataFrame:
        """Classes ranked by their best window score over the whole file."""
        scores = self.reported_scores()
        best = scores.max(axis=0)
        order = np.argsort(-best, kind="stable")[:k]
        return pd.DataFrame({
            "rank": np.arange(1, len(order) + 1),
            "scientific_name": [self.labels[i] for i in order],
            "common_name": [self.common_names[i] if self.common_names else "" for i in order],
            "max_score": best[order].astype(float),
            "best_window_start_s": [float(self.starts[int(np.argmax(scores[:, i]))]) for i in order],
        })


def run_file(
    model: ModelBase,
    path: str | Path,
    hop_s: float | None = None,
    want_scores: bool = True,
    want_embeddings: bool = True,
    progress: Progress | None = None,
    batch_size: int | None = None,
    class_mask: np.ndarray | None = None,
) -> FileResult:
    """Slide the model's window over ``path`` (streamed block by block) and collect scores and embeddings."""
    path = Path(path)
    info = audio_info(path)
    window_s = model.audio_config.target_length_seconds
    hop_s = window_s if hop_s is None else float(hop_s)
    if hop_s <= 0:
        raise ValueError("hop_s must be positive")
    batch_size = batch_size or model.preferred_batch_size
    duration = info.duration_s
    starts: list[float] = []
    scores: list[np.ndarray] = []
    embeddings: list[np.ndarray] = []
    has_head = model.has_classifier
    pending: list[np.ndarray] = []
    check_recording = getattr(model, "check_recording", None)
    if check_recording is not None:  # e.g. BatDetect2 refuses rates too low for bat calls
        check_recording(path, info.sample_rate)
    detect_calls = getattr(model, "detect_calls", None)
    if detect_calls is not None and not math.isclose(hop_s, window_s):
        raise ConfigError(f"{model.name} finds calls in consecutive {window_s:g}-s chunks: leave the hop unset "
                          f"(got {hop_s:g} s)")
    calls: list[pd.DataFrame] = []
    call_features: list[np.ndarray] = []
    win_samples = int(round(window_s * model.sample_rate))
    total_samples = -(-info.frames * model.sample_rate // info.sample_rate)  # after resampling (ceil)

    def flush() -> None:
        if not pending:
            return
        if detect_calls is not None:
            window_starts = starts[-len(pending):]
            valid = [min(win_samples, total_samples - int(round(s * model.sample_rate))) for s in window_starts]
            emb, sc, found = detect_calls(torch.from_numpy(np.stack(pending)), starts=window_starts,
                                          valid_samples=valid, source_rate=info.sample_rate, file=path.name)
            calls.append(found.table)
            call_features.append(found.features)
        else:
            emb, sc = model.embed_and_score(torch.from_numpy(np.stack(pending)))
        if want_embeddings:
            embeddings.append(emb.detach().cpu().float().numpy())
        if want_scores and sc is not None:
            scores.append(sc.detach().cpu().float().numpy())
        pending.clear()

    for start, window in iter_windows(path, model.sample_rate, window_s, hop_s,
                                      res_type=getattr(model, "resample_type", RESAMPLE_TYPE),
                                      scale=getattr(model, "resample_scale", True)):
        starts.append(start)
        pending.append(window)
        if len(pending) >= batch_size:
            flush()
            if progress is not None and duration > 0:
                progress(min(1.0, (start + window_s) / duration), f"{path.name}: {min(start + window_s, duration):.0f} / {duration:.0f} s")
    flush()
    if progress is not None:
        progress(1.0, f"{path.name}: done")
    starts_arr = np.asarray(starts, dtype=np.float64)
    labels = model.class_labels if has_head else None
    return FileResult(
        file=path,
        duration_s=duration,
        sample_rate=info.sample_rate,
        starts=starts_arr,
        ends=np.minimum(starts_arr + window_s, duration) if duration > 0 else starts_arr + window_s,
        scores=np.concatenate(scores) if scores else None,
        embeddings=np.concatenate(embeddings) if embeddings else None,
        labels=labels,
        common_names=list(model.common_names) if model.common_names and has_head else None,
        class_mask=class_mask,
        calls=pd.concat(calls, ignore_index=True) if calls else None,
        call_features=np.concatenate(call_features) if call_features else None,
    )


def predictions_csv(results: Iterable[FileResult], k: int = 5, min_score: float = 0.0) -> str:
    """The predictions of several files as one CSV (columns ``PREDICTION_COLUMNS``)."""
    tables = [r.calls_table(min_score) if r.calls is not None else r.top_k_table(k, min_score) for r in results]
    frame = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=PREDICTION_COLUMNS)
    return frame.to_csv(index=False)


def raven_selection_table(result: FileResult, k: int = 1, min_score: float = 0.1) -> str:
    """A Raven Pro selection table (tab-separated .txt): one selection per window and class above ``min_score``;
    for call detectors one per call with detection probability >= ``min_score``, with its own frequency box."""
    out = io.StringIO()
    out.write("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\t"
              "Species Code\tCommon Name\tConfidence\tBegin File\n")
    if result.calls is not None:
        for i, call in enumerate(result.calls_table(min_score).itertuples(index=False), start=1):
            out.write(f"{i}\tSpectrogram 1\t1\t{call.start_s:.4f}\t{call.end_s:.4f}\t{call.low_freq_hz:.0f}\t"
                      f"{call.high_freq_hz:.0f}\t{call.scientific_name}\t{call.common_name}\t"
                      f"{call.detection_prob:.4f}\t{call.file}\n")
        return out.getvalue()
    table = result.top_k_table(k, min_score)
    high = result.sample_rate / 2
    for i, row in enumerate(table.itertuples(index=False), start=1):
        out.write(f"{i}\tSpectrogram 1\t1\t{row.start_s:.3f}\t{row.end_s:.3f}\t0\t{high:.0f}\t"
                  f"{row.scientific_name}\t{row.common_name}\t{row.score:.4f}\t{row.file}\n")
    return out.getvalue()


def save_embeddings_npz(results: list[FileResult], path: str | Path) -> Path:
    """One pooled embedding row per file plus the file names (and per-window embeddings), atomically."""
    path = Path(path)
    pooled = np.stack([r.pooled_embedding() for r in results]).astype(np.float32)
    payload = {
        "embeddings": pooled,
        "files": np.array([r.file.name for r in results]),
    }
    for i, r in enumerate(results):
        payload[f"windows_{i}"] = r.embeddings.astype(np.float32)
        payload[f"window_starts_{i}"] = r.starts
        if r.call_features is not None:  # call detectors: one feature vector per call, and when it starts
            payload[f"call_features_{i}"] = r.call_features.astype(np.float32)
            payload[f"call_starts_{i}"] = r.calls["start_s"].to_numpy()
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **payload)
    return path
