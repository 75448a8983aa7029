"""Embeddings of dataset clips, cached on disk so a second run (or a resumed one) does not recompute them.

Key: (model name, checkpoint sha256, layers, aggregation, sample rate and window) selects a folder; inside it one
``.npy`` per clip named by the sha256 of the audio file's bytes plus the segment bounds. Each embedding is
written to a temporary file and renamed, as soon as it is computed, so an interrupted run keeps everything it
finished and never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from rl_core.atomic import atomic_write, write_bytes_atomic
from rl_core.audio import load_audio
from rl_core.evaluation.datasets import AudioDataset, Clip
from rl_core.inference import AnalysisLimits, analyse_recording
from rl_core.models.base import ModelBase

log = logging.getLogger(__name__)

_file_hashes: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def default_cache_dir() -> Path:
    """$RL_CORE_EMBEDDING_CACHE, else ~/.cache/rl_core/embeddings."""
    env = os.environ.get("RL_CORE_EMBEDDING_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "rl_core" / "embeddings"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime) within the process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        if key in _file_hashes:
            return _file_hashes[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _hash_lock:
        _file_hashes[key] = value
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "model"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


class EmbeddingCache:
    """On-disk store of per-clip embeddings for one model configuration."""

    def __init__(
        self,
        root: str | Path | None,
        model_name: str,
        checkpoint_sha256: str,
        layers: Sequence[str | int] | str = "last_layer",
        aggregation: str = "mean",
        sample_rate: int = 0,
        window_samples: int = 0,
    ) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.key = {
            "model": model_name, "checkpoint_sha256": checkpoint_sha256,
            "layers": [layers] if isinstance(layers, (str, int)) else list(layers),
            "aggregation": aggregation, "sample_rate": sample_rate, "window_samples": window_samples,
            "format": 2,  # 2: clips windowed by analyse_recording (last-window rule, pooled embedding)
        }
        config_hash = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = self.root / _slug(model_name) / config_hash
        self.stats = CacheStats()

    def clip_key(self, clip: Clip) -> str:
        text = f"{file_sha256(clip.path)}|{clip.start_s}|{clip.end_s}"
        return hashlib.sha256(text.encode()).hexdigest()

    def path_for(self, clip: Clip) -> Path:
        key = self.clip_key(clip)
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, clip: Clip) -> np.ndarray | None:
        path = self.path_for(clip)
        if not path.is_file():
            self.stats.misses += 1
            return None
        try:
            value = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            log.warning("unreadable cache entry %s: recomputing it", path)
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return value

    def put(self, clip: Clip, embedding: np.ndarray) -> Path:
        path = self.path_for(clip)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "key.json"
        if not meta.is_file():
            write_bytes_atomic(json.dumps(self.key, indent=2).encode(), meta)
        with atomic_write(path, "wb") as handle:
            np.save(handle, np.asarray(embedding, dtype=np.float32), allow_pickle=False)
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.rglob("*.npy")) if self.folder.is_dir() else 0


class _AudioReader:
    """Loads clips at one sample rate, keeping the last decoded file (segments of one file come in a row)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._path: Path | None = None
        self._audio: np.ndarray | None = None

    def __call__(self, clip: Clip) -> np.ndarray:
        if clip.path != self._path:
            self._audio, _ = load_audio(clip.path, self.sample_rate)
            self._path = clip.path
        audio = self._audio
        assert audio is not None
        if clip.start_s is None:
            return audio
        start = int(round(clip.start_s * self.sample_rate))
        end = int(round(clip.end_s * self.sample_rate)) if clip.end_s is not None else audio.shape[0]
        return audio[start:end]


def embed_dataset(
    model: ModelBase,
    dataset: AudioDataset,
    cache: EmbeddingCache | None,
    layers: Sequence[str | int] | str = "last_layer",
    aggregation: str = "mean",
    progress: bool | Callable[[float, str], None] = True,
    limits: AnalysisLimits | None = None,
) -> np.ndarray:
    """(N, D) embeddings of every clip, from the cache when present; new ones are cached as they are computed.

    A clip's embedding is the mean of its window embeddings from ``rl_core.inference.analyse_recording`` (the
    one windowing rule), on the clip's audio cut from the whole decoded file.
    """
    reader = _AudioReader(model.sample_rate)
    rows: list[np.ndarray] = []
    bar = tqdm(dataset.clips, desc=f"embed {dataset.name}", unit="clip", disable=progress is not True, leave=False)
    for i, clip in enumerate(bar):
        value = cache.get(clip) if cache is not None else None
        if value is None:
            value = analyse_recording(model, reader(clip), sample_rate=model.sample_rate, name=clip.path.name,
                                      layers=layers, aggregation=aggregation, want_scores=False,
                                      limits=limits).pooled_embedding()
            if cache is not None:
                cache.put(clip, value)
        rows.append(value)
        if callable(progress):
            progress((i + 1) / len(dataset.clips), f"embedded {i + 1}/{len(dataset.clips)} clips")
    return np.stack(rows).astype(np.float32)
