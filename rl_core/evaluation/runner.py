"""The benchmark runner and the two real benchmarks built from recordings shipped in the pykanto/vocalpy wheels.

Protocol ``bundled-v1`` (docs/benchmarks.md): clips are embedded once (cached), then
  * probe metrics: k-fold cross-validation (stratified, grouped by source recording where clips share one);
    per fold an offline probe (default: linear) is fitted on z-scored embeddings with early stopping on 20 % of
    the training fold; out-of-fold predictions of all clips give accuracy, balanced accuracy, macro F1, mAP,
    AUROC;
  * retrieval (R-AUC, P@1, cosine) and clustering (k-means NMI, ARI) on all embeddings.
Results become leaderboard rows with provenance (checkpoint sha256, rl_core version, git commit, hardware,
seed, protocol, wall time).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

from rl_core.catalog import weights_status
from rl_core.checkpoints import sha256_of
from rl_core.configs import ProbeConfig
from rl_core.datasets_bundled import great_tit_songs, pykanto_dir, storm_petrel_recordings, vocalpy_examples_dir
from rl_core.errors import ConfigError, DatasetError, RLCoreError
from rl_core.evaluation.datasets import AudioDataset, Clip, windowed
from rl_core.evaluation.embedding_cache import EmbeddingCache, embed_dataset
from rl_core.evaluation.metrics import (
    METRIC_NAMES,
    classification_metrics,
    clustering_metrics,
    multilabel_metrics,
    retrieval_metrics,
)
from rl_core.evaluation.training import Standardizer, TrainingConfig, fit_probe, predict_scores, validation_split
from rl_core.models.base import ModelBase
from rl_core.probes import build_probe_from_config_offline
from rl_core.registry import get_model_entry, registered_models

log = logging.getLogger(__name__)

PROTOCOL = "bundled-v1"
REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- the bundled benchmarks
def great_tit_individuals() -> AudioDataset:
    """20 pykanto great-tit songs, whole files, labelled by individual (B32: 11 songs, SW83: 9 songs)."""
    clips = [Clip(r.path, (r.label,), group=r.path.name) for r in great_tit_songs()]
    return AudioDataset("great_tit_individuals", clips, source="pykanto/data/segmented/great_tit")


def _sonic_visualiser_segments(xml_path: Path) -> list[tuple[float, float]]:
    """(start_s, end_s) of the boxes annotated in a Sonic Visualiser .xml file."""
    root = ET.parse(xml_path).getroot()
    model = root.find(".//model")
    if model is None:
        raise DatasetError(f"{xml_path}: no <model> element (not a Sonic Visualiser annotation)")
    rate = float(model.get("sampleRate", "0"))
    return [(int(p.get("frame", 0)) / rate, (int(p.get("frame", 0)) + int(p.get("duration", 0))) / rate)
            for p in root.iter("point")]


def multi_taxon() -> AudioDataset:
    """Four taxa the wheels hold enough independent material for (see docs/benchmarks.md for what is left out).

    * Parus major: the 20 great-tit songs (whole files);
    * Hydrobates pelagicus: the 11 calls annotated in the two xeno-canto storm-petrel recordings;
    * Lonchura striata domestica (Bengalese finch): 3-s windows of three song recordings;
    * Taeniopygia guttata (zebra finch): four Sound Analysis Pro songs and one call.
    The group of a clip is its source recording, so windows/calls of one recording never straddle a split.
    """
    clips = [Clip(r.path, ("Parus major",), group=r.path.name) for r in great_tit_songs()]
    for wav in storm_petrel_recordings():
        for start, end in _sonic_visualiser_segments(wav.with_suffix(".xml")):
            clips.append(Clip(wav, ("Hydrobates pelagicus",), round(start, 4), round(end, 4), group=wav.name))
    vocalpy = vocalpy_examples_dir()
    finch_files = sorted((pykanto_dir() / "raw" / "BENGALESE_FINCH").rglob("*.wav")) + [vocalpy / "bl26lb16.wav"]
    finch = AudioDataset("bf", [Clip(p, ("Lonchura striata domestica",), group=p.name) for p in finch_files])
    clips += windowed(finch, window_s=3.0, hop_s=3.0).clips
    for name in ("bells.wav", "flashcam.wav", "samba.wav", "simple.wav", "WhiLbl0010_110411-DC-01.wav"):
        clips.append(Clip(vocalpy / name, ("Taeniopygia guttata",), group=name))
    return AudioDataset("multi_taxon", clips, source="pykanto + vocalpy wheels")


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    task: str
    load: Callable[[], AudioDataset]
    folds: int
    description: str = ""


BUNDLED_BENCHMARKS: dict[str, BenchmarkSpec] = {
    "great_tit_individuals": BenchmarkSpec(
        "great_tit_individuals", "individual identification", great_tit_individuals, 5,
        "20 great-tit songs, 2 individuals, 5-fold stratified CV"),
    "multi_taxon": BenchmarkSpec(
        "multi_taxon", "taxon classification", multi_taxon, 3,
        "4 taxa (great tit, storm-petrel, Bengalese finch, zebra finch), 3-fold CV grouped by recording"),
}


def get_benchmark(name: str) -> BenchmarkSpec:
    if name not in BUNDLED_BENCHMARKS:
        from rl_core.configs import suggest

        raise ConfigError(f"unknown benchmark '{name}'.{suggest(name, list(BUNDLED_BENCHMARKS))} "
                          f"Bundled benchmarks: {', '.join(BUNDLED_BENCHMARKS)}")
    return BUNDLED_BENCHMARKS[name]


def custom_benchmark(dataset: AudioDataset, folds: int = 5, task: str = "classification") -> BenchmarkSpec:
    return BenchmarkSpec(dataset.name, task, lambda: dataset, folds, f"custom dataset {dataset.source}")


# --------------------------------------------------------------------------- provenance
def git_commit() -> str:
    """HEAD of the project checkout (``+dirty`` with uncommitted changes), or '' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} CPUs (torch threads {torch.get_num_threads()}){gpu}"


def checkpoint_sha256(name: str) -> str:
    """sha256 of the weights registered model ``name`` loads ('' when they are not here or do not exist)."""
    entry = get_model_entry(name)
    if entry.checkpoint_sha256:
        return entry.checkpoint_sha256
    status = weights_status(entry)
    return sha256_of(status.path) if status.present else ""


def models_with_weights() -> list[str]:
    """Registered models whose weights are on this machine (bundled or cached)."""
    return [name for name, entry in registered_models().items() if weights_status(entry).present]


# --------------------------------------------------------------------------- running one benchmark
@dataclass
class BenchmarkResult:
    model: str
    benchmark: str
    task: str
    metrics: dict[str, float]
    n_clips: int
    classes: list[str]
    seed: int
    wall_time_s: float
    embed_s: float
    train_s: float
    cache_hits: int
    cache_misses: int
    random_weights: bool
    checkpoint_sha256: str
    probe_type: str
    folds: int
    extra: dict[str, Any] = field(default_factory=dict)


def _folds(dataset: AudioDataset, targets: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    groups = np.array([c.group or str(i) for i, c in enumerate(dataset.clips)])
    index = np.arange(len(dataset))
    if dataset.multi_label:
        return list(KFold(n_folds, shuffle=True, random_state=seed).split(index))
    _, counts = np.unique(targets, return_counts=True)
    if counts.min() < 2:
        dataset.require_examples_per_class(2)
    if len(set(groups)) < len(groups):
        return list(StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(index, targets, groups))
    n_folds = min(n_folds, int(counts.min()))
    return list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(index, targets))


def cross_validated_scores(
    embeddings: np.ndarray, targets: np.ndarray, dataset: AudioDataset, probe_config: ProbeConfig,
    training: TrainingConfig, folds: int, seed: int, progress: bool = False,
) -> tuple[np.ndarray, float]:
    """Out-of-fold class scores (N, C) and the total probe-training time."""
    n_classes = len(dataset.classes)
    scores = np.zeros((len(dataset), n_classes), dtype=np.float32)
    covered = np.zeros(len(dataset), dtype=bool)
    train_s = 0.0
    for fold, (train_idx, test_idx) in enumerate(_folds(dataset, targets, folds, seed)):
        cfg = training.model_copy(update={"seed": seed * 1000 + fold})
        inner_train, inner_val = validation_split(targets[train_idx], cfg.val_fraction, cfg.seed)
        scaler = Standardizer(embeddings[train_idx]) if cfg.standardize else (lambda x: x.astype(np.float32))
        head = build_probe_from_config_offline(probe_config, embeddings.shape[1], n_classes)
        x_train = scaler(embeddings[train_idx])
        fit = fit_probe(head, x_train[inner_train], targets[train_idx][inner_train],
                        x_train[inner_val], targets[train_idx][inner_val], cfg, progress=progress)
        train_s += fit.seconds
        scores[test_idx] = predict_scores(head, scaler(embeddings[test_idx]), dataset.multi_label)
        covered[test_idx] = True
    if not covered.all():
        raise RLCoreError(f"cross-validation left {int((~covered).sum())} clip(s) without a test prediction")
    return scores, train_s


RANDOM_INIT_SEED = 0


def random_init_model(name: str) -> ModelBase:
    """The architecture of ``name`` with random weights drawn from a fixed seed (no checkpoint is read)."""
    from rl_core.loading import build_model

    torch.manual_seed(RANDOM_INIT_SEED)
    model = build_model(name, device="cpu")
    model.eval()
    return model


def _cached_model(name: str) -> ModelBase:
    from rl_core.cache import get_model

    return get_model(name)


def is_random_weights(name: str, model: ModelBase, sha: str) -> bool:
    entry = get_model_entry(name)
    return bool(entry.random_weights or (not sha and not model.pretrained))


def run_benchmark(
    model_name: str,
    benchmark: str | BenchmarkSpec,
    probe_config: ProbeConfig | None = None,
    training: TrainingConfig | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    model: ModelBase | None = None,
    progress: bool = True,
    random_init: bool = False,
) -> BenchmarkResult:
    """Embed (cached), cross-validate a probe, compute retrieval and clustering metrics.

    ``random_init=True`` runs the architecture with seeded random weights (a baseline; its rows are flagged).
    """
    start = time.perf_counter()
    spec = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    probe_config = probe_config or ProbeConfig(probe_type="linear")
    training = training or TrainingConfig(seed=seed)
    if probe_config.probe_type in ("attention", "lstm", "transformer") and probe_config.aggregation == "none":
        raise ConfigError("the benchmark runner probes pooled clip embeddings; use aggregation mean/max/cls_token")
    dataset = spec.load()
    dataset.require_examples_per_class(2)
    if model is None:
        model = random_init_model(model_name) if random_init else _cached_model(model_name)
    sha = "" if random_init else checkpoint_sha256(model_name)
    layers = probe_config.target_layers if probe_config.target_layers != ["backbone"] else ["last_layer"]
    layers = "all" if layers == ["all"] else layers
    aggregation = probe_config.aggregation if probe_config.aggregation in ("mean", "max", "cls_token") else "mean"
    cache = EmbeddingCache(cache_dir, model_name, sha or f"random-init-seed{RANDOM_INIT_SEED}", layers, aggregation,
                           model.sample_rate, model.window_samples, model.resampling)
    t0 = time.perf_counter()
    embeddings = embed_dataset(model, dataset, cache, layers, aggregation, progress=progress)
    embed_s = time.perf_counter() - t0
    targets = dataset.targets()
    scores, train_s = cross_validated_scores(embeddings, targets, dataset, probe_config, training, spec.folds, seed,
                                             progress=False)
    metrics = multilabel_metrics(targets, scores) if dataset.multi_label else classification_metrics(targets, scores)
    if not dataset.multi_label:
        labels = np.array([c.label for c in dataset.clips])
        metrics.update(retrieval_metrics(embeddings, labels))
        metrics.update(clustering_metrics(embeddings, labels, seed=seed))
    return BenchmarkResult(
        model=model_name, benchmark=spec.name, task=spec.task, metrics=metrics, n_clips=len(dataset),
        classes=list(dataset.classes), seed=seed, wall_time_s=time.perf_counter() - start, embed_s=embed_s,
        train_s=train_s, cache_hits=cache.stats.hits, cache_misses=cache.stats.misses,
        random_weights=random_init or is_random_weights(model_name, model, sha), checkpoint_sha256=sha,
        probe_type=probe_config.probe_type, folds=spec.folds,
    )


PROBE_METRICS = {"accuracy", "balanced_accuracy", "macro_f1", "mAP", "AUROC"}


def result_rows(result: BenchmarkResult, benchmark_label: str = "rl_core bundled") -> list[dict[str, Any]]:
    """Leaderboard rows (``rl_core.leaderboard`` schema) for one result, with provenance."""
    from rl_core import __version__

    entry = get_model_entry(result.model)
    commit = git_commit()
    today = _dt.datetime.now(_dt.timezone.utc).date().isoformat()
    probe_name = {"attention": "attentive"}.get(result.probe_type, result.probe_type)
    rows = []
    for key, value in result.metrics.items():
        rows.append({
            "model": result.model, "family": entry.family or "Other", "benchmark": benchmark_label,
            "dataset": result.benchmark, "task": result.task, "metric": METRIC_NAMES.get(key, key),
            "probe": probe_name if key in PROBE_METRICS else "none", "value": round(float(value), 6),
            "kind": "local",
            "source": f"rl_core {__version__} benchmark runner, protocol {PROTOCOL} (docs/benchmarks.md)",
            "source_link": "", "source_row": -1,
            "parameters": float(entry.parameters) if entry.parameters else float("nan"),
            "random_weights": result.random_weights, "date": today,
            "notes": (f"{result.n_clips} clips, {len(result.classes)} classes, {result.folds}-fold CV; embeddings: "
                      f"{result.cache_misses} computed, {result.cache_hits} from cache; embed {result.embed_s:.1f} s, "
                      f"probe fits {result.train_s:.1f} s"
                      + ("; RANDOM WEIGHTS (baseline, not ranked with trained models)" if result.random_weights else "")),
            "checkpoint_sha256": result.checkpoint_sha256, "rl_core_version": __version__, "git_commit": commit,
            "hardware": hardware(), "seed": result.seed, "protocol": PROTOCOL,
            "wall_time_s": round(result.wall_time_s, 3),
        })
    return rows


def run_and_record(
    model_names: list[str], benchmarks: list[str | BenchmarkSpec], probe_config: ProbeConfig | None = None,
    training: TrainingConfig | None = None, seeds: list[int] | None = None, cache_dir: str | Path | None = None,
    leaderboard_dir: str | Path | None = None, write: bool = True, progress: bool = True,
    random_init: list[str] | None = None,
) -> tuple[list[BenchmarkResult], list[dict[str, Any]]]:
    """Run every (model, benchmark, seed) and append all rows to the leaderboard in one atomic write at the end.

    Models named in ``random_init`` run with seeded random weights as labelled baselines.
    """
    from rl_core.leaderboard import append_local_results

    runs = [(name, False) for name in model_names] + [(name, True) for name in random_init or []]
    for name, _ in runs:
        get_model_entry(name)  # unknown names fail before any work
    specs = [get_benchmark(b) if isinstance(b, str) else b for b in benchmarks]
    results, rows = [], []
    for name, random in runs:
        model = random_init_model(name) if random else _cached_model(name)
        for spec in specs:
            for seed in seeds or [0]:
                training_seeded = (training or TrainingConfig()).model_copy(update={"seed": seed})
                result = run_benchmark(name, spec, probe_config, training_seeded, seed, cache_dir, model, progress,
                                       random_init=random)
                results.append(result)
                label = "rl_core bundled" if spec.name in BUNDLED_BENCHMARKS else "custom"
                rows += result_rows(result, label)
                log.info("%s on %s (seed %d): %s", name, spec.name, seed,
                         ", ".join(f"{k}={v:.3f}" for k, v in result.metrics.items()))
    if write and rows:
        append_local_results(rows, leaderboard_dir)
    return results, rows
