"""One path from a recording to windows, scores and embeddings (``analyse_recording``), and its exports.

Every caller (the CLI's ``predict`` and ``embed``, the app's inference tab and embedding map, the evaluation cache
and benchmark runner) goes through ``analyse_recording``, so a recording is windowed and embedded one way. The
windowing and the last partial window rule are those of ``rl_core.audio.iter_windows``.

Window embeddings are saved in one ``.npz`` layout (``save_embeddings_npz`` / ``load_embeddings_npz``):
``embeddings`` (N, D) float32, one row per window of every file; ``file_index`` (N,) the row's file in ``files``;
``files`` (F,) the recordings' names; ``start_s``, ``end_s`` (N,) the window bounds in seconds; ``model`` and
``layer`` (strings). One vector per file is a derivation: ``pooled_file_embeddings`` (mean or max over its rows).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd

from rl_core.audio import MIN_TAIL_FRACTION, AudioInfo, audio_info, count_windows, iter_windows, windows_of_array
from rl_core.detection_filters import display_label
from rl_core.errors import (
    ConfigError,
    InvalidAudioValuesError,
    LimitExceededError,
    UnsupportedSampleRateError,
)

if TYPE_CHECKING:  # torch is imported only for torch models: a BirdNET worker runs without it
    from rl_core.birdnet_litert import BirdNETLiteRT
    from rl_core.models.base import ModelBase

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ["file", "start_s", "end_s", "rank", "scientific_name", "common_name", "score"]
SUMMARY_COLUMNS = ["rank", "scientific_name", "common_name", "max_score", "mean_score", "best_window_start_s",
                   "windows_at_or_above"]
Progress = Callable[[float, str], None]


# --------------------------------------------------------------------------- limits
@dataclass(frozen=True)
class AnalysisLimits:
    """Bounds on the work one recording may cause, checked from its header before anything is decoded.

    The defaults take a four-hour recorder file at 48 kHz with a 1-s hop; raise them for longer jobs
    (CLI and app: ``--max-duration``, ``--max-windows``).
    """

    #: longest recording analysed, in seconds
    max_duration_s: float = 4 * 3600.0
    #: most analysis windows per recording (duration / hop)
    max_windows: int = 20_000
    #: sample rates outside this range are refused: such headers come from damaged or mislabelled files
    min_sample_rate: int = 1_000
    max_sample_rate: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("max_duration_s", "max_windows", "min_sample_rate", "max_sample_rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"AnalysisLimits.{name} must be a positive number, got {value!r}")
        if self.min_sample_rate > self.max_sample_rate:
            raise ConfigError("AnalysisLimits.min_sample_rate is above max_sample_rate")

    def check(self, name: str, sample_rate: int, duration_s: float, windows: int, hop_s: float) -> None:
        """Raise a one-line error naming the limit and how to raise it when the recording exceeds one."""
        if not self.min_sample_rate <= sample_rate <= self.max_sample_rate:
            raise UnsupportedSampleRateError(
                f"{name}: its header says {sample_rate:,} Hz, outside the {self.min_sample_rate:,}-"
                f"{self.max_sample_rate:,} Hz that rl_core analyses (a damaged or mislabelled file?); re-export it "
                f"at its true rate, or widen AnalysisLimits(min_sample_rate=..., max_sample_rate=...)"
            )
        if duration_s > self.max_duration_s:
            raise LimitExceededError(
                f"{name}: {duration_s:,.1f} s of audio exceeds the limit of {self.max_duration_s:,.0f} s per "
                f"recording; split the file, or raise the limit (--max-duration SECONDS, "
                f"AnalysisLimits(max_duration_s=...))"
            )
        if windows > self.max_windows:
            raise LimitExceededError(
                f"{name}: {windows:,} analysis windows ({duration_s:.1f} s at a hop of {hop_s:g} s) exceed the "
                f"limit of {self.max_windows:,} per recording; use a longer hop, or raise the limit "
                f"(--max-windows N, AnalysisLimits(max_windows=...))"
            )


# --------------------------------------------------------------------------- result
class Timeline(NamedTuple):
    """Scores of the top classes over time: ``scores[i, w]`` is class ``labels[i]`` in window ``w``."""

    starts: list[float]
    #: window bin edges: the starts plus the end of the last window
    edges: list[float]
    labels: list[str]
    scores: np.ndarray


@dataclass
class RecordingResult:
    """Per-window outputs of one model on one recording.

    Scores are either the full (windows, classes) matrix ``scores`` or, with ``analyse_recording(keep_top=N)``,
    the N best classes per window (``top_indices``, ``top_scores``): then a class's mean and count of windows
    above a threshold count it as 0 where it was not among the N best (lower bounds).
    """

    #: the name outputs use (unique within one request; see ``unique_names``)
    name: str
    file: Path | None
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
    top_indices: np.ndarray | None = None
    top_scores: np.ndarray | None = None
    model: str = ""
    layer: str = "last_layer"
    #: call detectors (``model.detects_calls``, BatDetect2): one row per call (times, frequencies, probabilities;
    #: the model's CALL_COLUMNS) and each call's feature vector (N, D) in the same order
    calls: pd.DataFrame | None = None
    call_features: np.ndarray | None = None

    def calls_table(self, min_score: float = 0.0) -> pd.DataFrame:
        """The detected calls with detection probability >= ``min_score`` (call detectors only)."""
        if self.calls is None:
            raise ValueError("this model does not detect calls: use top_k_table for per-window predictions")
        return self.calls[self.calls["detection_prob"] >= min_score].reset_index(drop=True)

    @property
    def num_windows(self) -> int:
        return int(self.starts.shape[0])

    @property
    def has_scores(self) -> bool:
        return self.scores is not None or self.top_scores is not None

    def reported_scores(self) -> np.ndarray:
        """Dense scores with classes outside ``class_mask`` set to 0 (the stored scores stay complete)."""
        if self.scores is None:
            if self.top_scores is not None:
                raise ValueError("this result keeps only the top scores per window (keep_top); use top_k_table")
            raise ValueError("this model has no classifier head: it gives embeddings, not species predictions")
        return self.scores if self.class_mask is None else np.where(self.class_mask[None, :], self.scores, 0.0)

    def _window_top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(windows, k) class indices and scores, best first."""
        if self.scores is None and self.top_scores is not None:
            k = min(k, self.top_scores.shape[1])
            return self.top_indices[:, :k], self.top_scores[:, :k]
        scores = self.reported_scores()
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(scores, order, axis=1)

    def _class_stats(self, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per class: best score, mean score, window of the best score, windows with score >= threshold."""
        if self.scores is None and self.top_scores is not None:
            n_classes = len(self.labels)
            idx, val = self.top_indices.ravel(), self.top_scores.ravel()
            best, total, count = np.zeros(n_classes), np.zeros(n_classes), np.zeros(n_classes, dtype=np.int64)
            np.maximum.at(best, idx, val)
            np.add.at(total, idx, val)
            np.add.at(count, idx, val >= threshold)
            at = np.zeros(n_classes, dtype=np.int64)
            by_value = np.argsort(-val, kind="stable")
            classes, first = np.unique(idx[by_value], return_index=True)
            at[classes] = by_value[first] // self.top_scores.shape[1]
            return best, total / max(self.num_windows, 1), at, count
        scores = self.reported_scores()
        return (scores.max(axis=0), scores.mean(axis=0), np.argmax(scores, axis=0),
                (scores >= threshold).sum(axis=0))

    def _ranked_classes(self, best: np.ndarray, k: int) -> np.ndarray:
        return np.argsort(-best, kind="stable")[: max(1, int(k))]

    def pooled_embedding(self, pooling: str = "mean") -> np.ndarray:
        """One (D,) vector for the recording: mean (or max) of its window embeddings."""
        if self.embeddings is None:
            raise ValueError("this result was computed without embeddings (want_embeddings=False)")
        return pool_windows(self.embeddings, pooling)

    def top_k_table(self, k: int = 5, min_score: float = 0.0) -> pd.DataFrame:
        """Top-k classes per window with the CLI's columns."""
        order, values = self._window_top(max(1, int(k)))
        rows = []
        for w in range(self.num_windows):
            start, end = round(float(self.starts[w]), 3), round(float(self.ends[w]), 3)
            for rank, (idx, score) in enumerate(zip(order[w], values[w]), start=1):
                if score < min_score:
                    continue
                rows.append((self.name, start, end, rank, self.labels[idx],
                             self.common_names[idx] if self.common_names else "", float(score)))
        return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)

    def file_summary(self, k: int = 5, threshold: float = 0.5) -> pd.DataFrame:
        """Classes ranked by their best window score over the whole recording, with their mean score, the start
        of their best window and how many windows score at least ``threshold``."""
        best, mean, at, count = self._class_stats(threshold)
        order = self._ranked_classes(best, k)
        return pd.DataFrame({
            "rank": np.arange(1, len(order) + 1),
            "scientific_name": [self.labels[i] for i in order],
            "common_name": [self.common_names[i] if self.common_names else "" for i in order],
            "max_score": best[order].astype(float),
            "mean_score": mean[order].astype(float),
            "best_window_start_s": self.starts[at[order]].astype(float),
            "windows_at_or_above": count[order].astype(int),
        }, columns=SUMMARY_COLUMNS)

    def timeline(self, k: int = 10) -> Timeline:
        """The ``k`` classes with the highest best-window score, and their score in every window."""
        if not self.has_scores:
            return Timeline([], [], [], np.zeros((0, self.num_windows), np.float32))
        best, _mean, _at, _count = self._class_stats(1.0)
        top = self._ranked_classes(best, k)
        if self.scores is not None:
            matrix = self.reported_scores()[:, top].T
        else:
            # (k, windows): a class's kept score in each window, 0 where it was not among the kept ones
            matrix = np.stack([np.where(self.top_indices == c, self.top_scores, 0.0).max(axis=1) for c in top])
        common = self.common_names or [""] * len(self.labels)
        labels = [display_label(self.labels[c], common[c]) for c in top]
        starts = [float(s) for s in self.starts]
        edges = [*starts, float(self.ends[-1])] if starts else []
        return Timeline(starts, edges, labels, np.asarray(matrix, dtype=np.float32))


def pool_windows(embeddings: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """(N, D) window embeddings -> (D,) by mean or max over windows."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ConfigError(f"expected (windows, dim) embeddings with at least one window, got {embeddings.shape}")
    if pooling == "mean":
        return embeddings.mean(axis=0)
    if pooling == "max":
        return embeddings.max(axis=0)
    raise ConfigError(f"unknown pooling '{pooling}': use mean or max")


def unique_names(names: Sequence[str]) -> list[str]:
    """The names made unique in order: a repeated ``song.wav`` becomes ``song (2).wav``, ``song (3).wav`` ..."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate.lower() in seen:
            n += 1
            stem, suffix = Path(name).stem, Path(name).suffix
            candidate = f"{stem} ({n}){suffix}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def _layer_name(layers: Any) -> str:
    """The npz's ``layer`` string: a name, an index, or several joined by commas."""
    if isinstance(layers, (list, tuple)):
        return ",".join(str(x) for x in layers)
    return str(layers)


def _as_numpy(values: Any) -> np.ndarray:
    """float32 numpy of a model output (a torch tensor, or numpy from a ``numpy_io`` model)."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float32, copy=False)
    return values.detach().cpu().float().numpy()


# --------------------------------------------------------------------------- the one path
def analyse_recording(
    model: ModelBase | BirdNETLiteRT,
    path: str | Path | np.ndarray,
    *,
    hop_s: float | None = None,
    layers: Any = "last_layer",
    aggregation: str = "mean",
    want_scores: bool = True,
    want_embeddings: bool = True,
    batch_size: int | None = None,
    progress: Progress | None = None,
    class_mask: np.ndarray | None = None,
    limits: AnalysisLimits | None = None,
    keep_top: int | None = None,
    sample_rate: int | None = None,
    name: str | None = None,
    info: AudioInfo | None = None,
) -> RecordingResult:
    """Slide the model's window over a recording and collect per-window scores and embeddings.

    ``path``: an audio file (streamed block by block) or a mono numpy array with its ``sample_rate`` (e.g. a
    segment of a dataset file). Windows are the model's length, one every ``hop_s`` seconds (default: the window
    length); the last partial window follows ``rl_core.audio``'s rule: the rest after the last whole window is
    zero-padded into one more window when it holds at least a quarter window of audio no earlier window covered,
    and a recording shorter than one window gives one zero-padded window.

    ``layers``/``aggregation`` are those of ``ModelBase.extract_embeddings``; the default (``"last_layer"``,
    ``"mean"``) is the model's pooled embedding, computed with the scores in one pass (``embed_and_score``).
    Scores come from the classifier head when the model has one and ``want_scores``. ``keep_top=N`` keeps only
    the N best (masked) scores per window instead of the full (windows, classes) matrix. ``limits`` are checked
    from the header before decoding. ``name``: the name outputs use (default: the file's name); ``info``: the
    file's ``audio_info`` when the caller has read it already.
    """
    limits = limits or AnalysisLimits()
    if hop_s is not None and not (isinstance(hop_s, (int, float)) and math.isfinite(hop_s) and hop_s > 0):
        raise ConfigError(f"the hop must be a positive number of seconds, got {hop_s!r}")
    if keep_top is not None and int(keep_top) < 1:
        raise ConfigError(f"keep_top (the CLI's --top-k) must be at least 1, got {keep_top}")
    window_s = model.window_samples / model.sample_rate
    hop = window_s if hop_s is None else float(hop_s)
    target_sr = model.sample_rate
    tail = 0.0 if model.detects_calls else MIN_TAIL_FRACTION  # a call may sit in any last bit of a recording

    if isinstance(path, np.ndarray):
        if sample_rate is None:
            raise ConfigError("analyse_recording needs sample_rate= with a numpy array")
        audio = np.asarray(path, dtype=np.float32)
        file, name, native_sr = None, name or "audio", int(sample_rate)
        if audio.ndim != 1 or audio.shape[0] == 0:
            raise ConfigError(f"{name}: expected a non-empty mono (samples,) array, got shape {audio.shape}")
        duration = audio.shape[0] / native_sr
        limits.check(name, native_sr, duration, count_windows(round(duration * target_sr), target_sr, window_s, hop, tail),
                     hop)
        if not np.isfinite(audio).all():
            raise InvalidAudioValuesError(f"{name}: the audio contains NaN or infinite sample values")
        model.check_recording(name, native_sr)
        windows = windows_of_array(audio, native_sr, target_sr, window_s, hop, model.resampling, tail)
        total_samples = math.ceil(audio.shape[0] * target_sr / native_sr)
    else:
        file = Path(path)
        info = info or audio_info(file)
        name, native_sr, duration = name or file.name, info.sample_rate, info.duration_s
        out_samples = math.ceil(info.frames * target_sr / native_sr) if native_sr > 0 else 0
        limits.check(name, native_sr, duration, count_windows(out_samples, target_sr, window_s, hop, tail), hop)
        model.check_recording(name, native_sr)
        total_samples = out_samples
        windows = iter_windows(file, target_sr, window_s, hop, resampling=model.resampling, info=info,
                               min_tail_fraction=tail)

    if isinstance(layers, (list, tuple)) and list(layers) == ["last_layer"]:
        layers = "last_layer"  # the benchmark runner's spelling of the default
    has_head = model.has_classifier
    fast = layers == "last_layer" and aggregation == "mean"
    want_head = want_scores and has_head
    batch_size = max(1, int(batch_size or model.preferred_batch_size))
    win = model.window_samples
    batch = np.empty((batch_size, win), dtype=np.float32)
    mask = None if class_mask is None else np.asarray(class_mask, dtype=bool)
    starts: list[float] = []
    embeddings: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    top_idx: list[np.ndarray] = []
    top_val: list[np.ndarray] = []
    calls: list[pd.DataFrame] = []
    call_features: list[np.ndarray] = []
    if model.detects_calls and not math.isclose(hop, window_s):
        raise ConfigError(f"{model.name} finds calls in consecutive {window_s:g}-s chunks: leave the hop unset "
                          f"(got {hop:g} s)")

    if getattr(model, "numpy_io", False):  # BirdNETLiteRT: numpy windows in, numpy out
        def model_input(n: int) -> np.ndarray:
            return batch[:n]
    else:
        import torch

        def model_input(n: int):
            return torch.from_numpy(batch[:n])

    def run(n: int) -> None:
        x = model_input(n)
        emb = sc = None
        if model.detects_calls:  # calls, window embeddings and per-window species scores in one pass
            window_starts = starts[-n:]
            valid = [min(win, total_samples - int(round(s * target_sr))) for s in window_starts]
            emb, sc, found = model.detect_calls(x, starts=window_starts, valid_samples=valid, source_rate=native_sr,
                                                file=name)
            calls.append(found.table)
            call_features.append(found.features)
        elif fast and (want_embeddings or want_head):
            emb, sc = model.embed_and_score(x)
        else:
            if want_embeddings:
                emb = model.extract_embeddings(x, layers=layers, aggregation=aggregation)
            if want_head:
                sc = model.embed_and_score(x)[1]
        if want_embeddings and emb is not None:
            embeddings.append(_as_numpy(emb).reshape(n, -1))
        if want_head and sc is not None:
            values = _as_numpy(sc)
            if keep_top is None:
                scores.append(values)
                return
            if mask is not None:
                values = np.where(mask[None, :], values, 0.0)
            k = min(int(keep_top), values.shape[1])
            part = np.argpartition(-values, k - 1, axis=1)[:, :k]
            part_val = np.take_along_axis(values, part, axis=1)
            order = np.argsort(-part_val, axis=1, kind="stable")
            top_idx.append(np.take_along_axis(part, order, axis=1).astype(np.int32))
            top_val.append(np.take_along_axis(part_val, order, axis=1).astype(np.float32))

    pending = 0
    for start, window in windows:
        starts.append(start)
        batch[pending] = window
        pending += 1
        if pending == batch_size:
            run(pending)
            pending = 0
            if progress is not None and duration > 0:
                done = min(start + window_s, duration)
                progress(min(1.0, done / duration), f"{name}: {done:.0f} / {duration:.0f} s")
    if pending:
        run(pending)
    if progress is not None:
        progress(1.0, f"{name}: done")

    starts_arr = np.asarray(starts, dtype=np.float64)
    return RecordingResult(
        name=name,
        file=file,
        duration_s=duration,
        sample_rate=native_sr,
        starts=starts_arr,
        ends=np.minimum(starts_arr + window_s, duration) if duration > 0 else starts_arr + window_s,
        scores=np.concatenate(scores) if scores else None,
        embeddings=np.concatenate(embeddings) if embeddings else None,
        labels=model.class_labels if has_head else None,
        common_names=list(model.common_names) if model.common_names and has_head else None,
        class_mask=None if keep_top is not None else mask,
        top_indices=np.concatenate(top_idx) if top_idx else None,
        top_scores=np.concatenate(top_val) if top_val else None,
        model=model.name,
        layer=_layer_name(layers),
        calls=pd.concat(calls, ignore_index=True) if calls else None,
        call_features=np.concatenate(call_features) if call_features else None,
    )
