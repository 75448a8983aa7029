"""What ``train`` and ``evaluate`` do, callable from Python: :func:`train` and :func:`evaluate`.

>>> from rl_core.evaluation.experiments import train, evaluate
>>> outcome = train("examples/train_probe.yml")          # doctest: +SKIP
>>> results, rows = evaluate("examples/evaluate.yml")    # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from rl_core.checkpoints import sha256_of
from rl_core.errors import DatasetError
from rl_core.evaluation.config import EvaluateRunConfig, TrainRunConfig, load_config, parse_config
from rl_core.evaluation.datasets import AudioDataset
from rl_core.evaluation.embedding_cache import EmbeddingCache, _AudioReader, embed_dataset
from rl_core.evaluation.metrics import classification_metrics, multilabel_metrics
from rl_core.evaluation.runner import (
    BenchmarkResult,
    checkpoint_sha256,
    custom_benchmark,
    git_commit,
    hardware,
    models_with_weights,
    run_and_record,
)
from rl_core.evaluation.training import Standardizer, fit_probe, predict_scores, validation_split
from rl_core.atomic import write_text_atomic
from rl_core.leaderboard import write_csv_atomic
from rl_core.probes import build_probe_from_config_offline, build_probe_from_config_online

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    metrics: dict[str, float]
    classes: list[str]
    output_dir: Path
    n_train: int
    n_test: int
    fit_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _as_config(config: Any, cls: type, base: Path | None) -> tuple[Any, Path | None]:
    if isinstance(config, cls):
        return config, base
    if isinstance(config, (str, Path)):
        return load_config(config, cls), Path(config).resolve().parent
    return parse_config(config, cls, "config"), base


def split_dataset(ds: AudioDataset, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, valid, test) indices: the CSV's split column when present, else a stratified (grouped) split."""
    if any(c.split for c in ds.clips):
        unsplit = [c.describe() for c in ds.clips if not c.split]
        if unsplit:
            raise DatasetError(f"dataset '{ds.name}': some rows have a split and some do not, e.g. {unsplit[0]}")
        train, valid, test = (ds.split_indices(s) for s in ("train", "valid", "test"))
        if not len(train) or not len(test):
            raise DatasetError(f"dataset '{ds.name}': the split column needs 'train' and 'test' rows "
                               f"(found {len(train)} train, {len(test)} test)")
        return train, valid, test
    ds.require_examples_per_class(2)
    index = np.arange(len(ds))
    groups = [c.group or str(i) for i, c in enumerate(ds.clips)]
    if len(set(groups)) < len(groups) or ds.multi_label:
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
        train, test = next(splitter.split(index, groups=groups))
    else:
        targets = ds.label_indices()
        n_test = max(int(round(len(ds) * test_fraction)), len(ds.classes))
        if n_test >= len(ds):
            raise DatasetError(f"dataset '{ds.name}' has {len(ds)} clips for {len(ds.classes)} classes: too few "
                               "to hold out a test set with every class")
        train, test = train_test_split(index, test_size=n_test, random_state=seed, stratify=targets)
    return np.sort(train), np.array([], dtype=np.int64), np.sort(test)


def _check_test_labels(ds: AudioDataset, train: np.ndarray, test: np.ndarray) -> None:
    seen = {label for i in train for label in ds.clips[i].labels}
    for i in test:
        for label in ds.clips[i].labels:
            if label not in seen:
                raise DatasetError(f"dataset '{ds.name}': label '{label}' of test clip {ds.clips[i].describe()} "
                                   "never occurs in the training split; the probe cannot learn it")


def _clip_batch(model, ds: AudioDataset, indices: np.ndarray, length: int) -> torch.Tensor:
    reader = _AudioReader(model.sample_rate, model.resampling)
    rows = []
    for i in indices:
        audio = reader(ds.clips[i])[:length]
        rows.append(np.pad(audio, (0, length - audio.shape[0])))
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def train(config: TrainRunConfig | dict | str | Path, progress: bool = True) -> TrainOutcome:
    """Fit a probe as the config says, test it, and save ``probe.pt``, ``metrics.json`` into ``output_dir``."""
    from rl_core import __version__
    from rl_core.cache import get_model

    cfg, base = _as_config(config, TrainRunConfig, None)
    ds = cfg.dataset.load(base)
    train_idx, valid_idx, test_idx = split_dataset(ds, cfg.test_fraction, cfg.training.seed)
    _check_test_labels(ds, train_idx, test_idx)
    if not len(valid_idx):
        inner_train, inner_val = validation_split(ds.targets()[train_idx], cfg.training.val_fraction, cfg.training.seed)
        train_idx, valid_idx = train_idx[inner_train], train_idx[inner_val]
    model = get_model(cfg.model, device=cfg.device, checkpoint_path=cfg.checkpoint_path)
    targets = ds.targets()
    extra: dict[str, Any] = {}
    if cfg.probe.online_training:
        length = cfg.probe.target_length or model.window_samples
        probe = build_probe_from_config_online(cfg.probe, model, len(ds.classes), cfg.device)
        x_train, x_val, x_test = (_clip_batch(model, ds, idx, length) for idx in (train_idx, valid_idx, test_idx))
    else:
        if cfg.checkpoint_path and Path(cfg.checkpoint_path).is_file():
            sha = sha256_of(cfg.checkpoint_path)
        else:
            sha = checkpoint_sha256(cfg.model) if cfg.checkpoint_path is None else cfg.checkpoint_path
        layers = "all" if cfg.probe.target_layers == ["all"] else cfg.probe.target_layers
        aggregation = cfg.probe.aggregation if cfg.probe.aggregation in ("mean", "max", "cls_token") else "mean"
        cache = EmbeddingCache(cfg.cache_dir, cfg.model, sha or "random-weights", layers, aggregation,
                               model.sample_rate, model.window_samples, model.resampling)
        emb = embed_dataset(model, ds, cache, layers, aggregation, progress=progress)
        scaler = Standardizer(emb[train_idx]) if cfg.training.standardize else (lambda x: x.astype(np.float32))
        x_train, x_val, x_test = (scaler(emb[idx]) for idx in (train_idx, valid_idx, test_idx))
        probe = build_probe_from_config_offline(cfg.probe, emb.shape[1], len(ds.classes), cfg.device)
        extra = {"cache_hits": cache.stats.hits, "cache_misses": cache.stats.misses}
        if cfg.training.standardize:
            extra["standardizer"] = scaler.state()
    fit = fit_probe(probe, x_train, targets[train_idx], x_val, targets[valid_idx], cfg.training, progress=progress,
                    device=cfg.device)
    scores = predict_scores(probe, x_test, ds.multi_label, device=cfg.device)
    metrics = (multilabel_metrics if ds.multi_label else classification_metrics)(targets[test_idx], scores)
    out = Path(cfg.output_dir)
    if not out.is_absolute() and base is not None:
        out = (base / out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".probe.pt.tmp"
    torch.save(probe.state_dict(), tmp)
    tmp.replace(out / "probe.pt")
    report = {
        "metrics": metrics, "classes": ds.classes, "n_train": int(len(train_idx)), "n_valid": int(len(valid_idx)),
        "n_test": int(len(test_idx)), "best_epoch": fit.best_epoch, "epochs_run": fit.epochs_run,
        "fit_seconds": fit.seconds, "config": cfg.model_dump(mode="json"), "rl_core_version": __version__,
        "git_commit": git_commit(), "hardware": hardware(), **{k: v for k, v in extra.items() if k != "standardizer"},
    }
    write_text_atomic(json.dumps(report, indent=2) + "\n", out / "metrics.json")
    if "standardizer" in extra:
        write_text_atomic(json.dumps(extra["standardizer"]) + "\n", out / "standardizer.json")
    log.info("probe on %s: %s", ds.name, ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    return TrainOutcome(metrics, list(ds.classes), out, len(train_idx), len(test_idx), fit.seconds, extra)


def evaluate(config: EvaluateRunConfig | dict | str | Path,
             progress: bool = True) -> tuple[list[BenchmarkResult], list[dict[str, Any]]]:
    """Run the benchmark protocol for every model and benchmark/dataset; append rows to the leaderboard."""
    cfg, base = _as_config(config, EvaluateRunConfig, None)
    models = models_with_weights() if cfg.models == "available" else list(cfg.models)
    if not models and not cfg.random_init:
        raise DatasetError("no model to evaluate: none has its weights on this machine")
    specs: list[Any] = list(cfg.benchmarks)
    for spec in cfg.datasets:
        specs.append(custom_benchmark(spec.load(base), folds=cfg.folds))  # load all first: errors before work
    from rl_core.evaluation.runner import get_benchmark

    for name in cfg.benchmarks:
        get_benchmark(name)
    leaderboard_dir = cfg.leaderboard_dir
    if leaderboard_dir and base is not None and not Path(leaderboard_dir).is_absolute():
        leaderboard_dir = str(base / leaderboard_dir)
    results, rows = run_and_record(models, specs, cfg.probe, cfg.training, cfg.seeds, cfg.cache_dir,
                                   leaderboard_dir, cfg.write_leaderboard, progress, cfg.random_init)
    if cfg.results_csv:
        path = Path(cfg.results_csv)
        if not path.is_absolute() and base is not None:
            path = base / path
        write_csv_atomic(pd.DataFrame(rows), path)
    return results, rows
