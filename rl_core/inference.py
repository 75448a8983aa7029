"""Run a model over whole recordings: windowed scores and embeddings, top-k tables, CSV and Raven exports."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from rl_core.atomic import atomic_write
from rl_core.audio import audio_info, iter_windows
from rl_core.csv_safety import spreadsheet_safe
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

    def flush() -> None:
        if not pending:
            return
        emb, sc = model.embed_and_score(torch.from_numpy(np.stack(pending)))
        if want_embeddings:
            embeddings.append(emb.detach().cpu().float().numpy())
        if want_scores and sc is not None:
            scores.append(sc.detach().cpu().float().numpy())
        pending.clear()

    for start, window in iter_windows(path, model.sample_rate, window_s, hop_s):
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
    )


def predictions_csv(results: Iterable[FileResult], k: int = 5, min_score: float = 0.0) -> str:
    """The predictions of several files as one CSV (columns ``PREDICTION_COLUMNS``)."""
    tables = [r.top_k_table(k, min_score) for r in results]
    frame = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=PREDICTION_COLUMNS)
    return spreadsheet_safe(frame).to_csv(index=False)


def raven_selection_table(result: FileResult, k: int = 1, min_score: float = 0.1) -> str:
    """A Raven Pro selection table (tab-separated .txt): one selection per window and class above ``min_score``."""
    table = result.top_k_table(k, min_score)
    out = io.StringIO()
    out.write("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\t"
              "Species Code\tCommon Name\tConfidence\tBegin File\n")
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
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **payload)
    return path
