"""Fitting a probe: AdamW, mini-batches, early stopping on a validation split, fixed seeds, a tqdm progress bar.

Works for offline heads on embeddings and for online probes on audio alike: both are ``nn.Module`` s mapping a
batch of inputs to logits. Single-label targets (N,) use cross-entropy; multi-hot targets (N, C) use
binary cross-entropy.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from sklearn.model_selection import train_test_split
from torch import nn
from tqdm.auto import tqdm

from rl_core.errors import ConfigError

log = logging.getLogger(__name__)


class TrainingConfig(BaseModel):
    """How a probe is fitted (the ``training:`` section of a train/evaluate YAML)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(100, gt=0)
    batch_size: int = Field(32, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(10, gt=0, description="epochs without validation improvement before stopping")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="share of the training clips held out for early stopping")
    seed: int = 0
    num_threads: int | None = Field(
        None, gt=0, description="torch threads while fitting; default 1 for probes on embeddings (their tiny "
        "matrix products run 10-80x slower with 2 threads on a busy CPU), unchanged for online probes")
    standardize: bool = Field(False, description="z-score embeddings with training statistics (hurts with few clips)")


@dataclass
class FitResult:
    best_epoch: int
    epochs_run: int
    best_val_loss: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch so a fit is repeatable."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def validation_split(targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): stratified when every class has two examples, random otherwise; val may be empty."""
    n = len(targets)
    index = np.arange(n)
    n_val = int(round(n * fraction))
    if fraction <= 0 or n_val < 1 or n - n_val < 1:
        return index, np.array([], dtype=np.int64)
    stratify = None
    if targets.ndim == 1:
        _, counts = np.unique(targets, return_counts=True)
        if counts.min() >= 2 and n_val >= len(counts):
            stratify = targets
    train, val = train_test_split(index, test_size=n_val, random_state=seed, shuffle=True, stratify=stratify)
    return np.sort(train), np.sort(val)


def _loss_fn(targets: torch.Tensor) -> nn.Module:
    return nn.BCEWithLogitsLoss() if targets.ndim == 2 else nn.CrossEntropyLoss()


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(batch_size))


def _evaluate_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    model.eval()
    loss_fn = _loss_fn(y)
    total = 0.0
    with torch.no_grad():
        for idx in _batches(len(x), batch_size, None):
            total += float(loss_fn(model(x[idx]), y[idx])) * len(idx)
    return total / max(len(x), 1)


def fit_probe(
    model: nn.Module,
    x_train: torch.Tensor | np.ndarray,
    y_train: torch.Tensor | np.ndarray,
    x_val: torch.Tensor | np.ndarray | None = None,
    y_val: torch.Tensor | np.ndarray | None = None,
    config: TrainingConfig | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Train ``model`` in place and restore its best-validation weights (or the last ones without validation)."""
    cfg = config or TrainingConfig()
    on_embeddings = np.ndim(x_train) == 2
    threads = cfg.num_threads or (1 if on_embeddings else None)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _fit(model, x_train, y_train, x_val, y_val, cfg, progress, device)
    finally:
        torch.set_num_threads(previous)


def _fit(model: nn.Module, x_train: Any, y_train: Any, x_val: Any, y_val: Any, cfg: TrainingConfig, progress: bool,
         device: str | torch.device) -> FitResult:
    set_seed(cfg.seed)
    x_train = torch.as_tensor(np.asarray(x_train) if not isinstance(x_train, torch.Tensor) else x_train).float().to(device)
    y_np = y_train.cpu().numpy() if isinstance(y_train, torch.Tensor) else np.asarray(y_train)
    y_train_t = torch.as_tensor(y_np, dtype=torch.float32 if y_np.ndim == 2 else torch.long).to(device)
    if len(x_train) != len(y_train_t) or len(x_train) == 0:
        raise ConfigError(f"need matching, non-empty training inputs and targets; got {len(x_train)} and {len(y_train_t)}")
    has_val = x_val is not None and y_val is not None and len(x_val) > 0
    if has_val:
        x_val_t = torch.as_tensor(np.asarray(x_val) if not isinstance(x_val, torch.Tensor) else x_val).float().to(device)
        y_val_np = y_val.cpu().numpy() if isinstance(y_val, torch.Tensor) else np.asarray(y_val)
        y_val_t = torch.as_tensor(y_val_np, dtype=y_train_t.dtype).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the probe has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    loss_fn = _loss_fn(y_train_t)
    generator = torch.Generator().manual_seed(cfg.seed)
    best_state = copy.deepcopy(model.state_dict())
    best_loss, best_epoch, stale = float("inf"), 0, 0
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(range(1, cfg.epochs + 1), desc="train probe", unit="epoch", disable=not progress, leave=False)
    epoch = 0
    for epoch in bar:
        model.train()
        total = 0.0
        for idx in _batches(len(x_train), cfg.batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[idx]), y_train_t[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        record = {"epoch": float(epoch), "train_loss": total / len(x_train)}
        monitored = record["train_loss"]
        if has_val:
            record["val_loss"] = monitored = _evaluate_loss(model, x_val_t, y_val_t, cfg.batch_size)
        history.append(record)
        bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "epoch"})
        if monitored < best_loss - 1e-6:
            best_loss, best_epoch, stale = monitored, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if has_val and stale >= cfg.patience:
                log.info("early stop at epoch %d (best %d, val loss %.4f)", epoch, best_epoch, best_loss)
                break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch, epoch, best_loss, time.perf_counter() - start, history)


def predict_scores(model: nn.Module, x: torch.Tensor | np.ndarray, multi_label: bool, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """(N, C) probabilities: softmax (single-label) or sigmoid (multi-label)."""
    x_t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float().to(device)
    model.eval()
    outs = []
    with torch.no_grad():
        for idx in _batches(len(x_t), batch_size, None):
            logits = model(x_t[idx])
            outs.append((torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)).cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


class Standardizer:
    """z-score with training statistics (kept with the probe so predictions use the same transform)."""

    def __init__(self, x_train: np.ndarray) -> None:
        self.mean = x_train.mean(axis=0, keepdims=True)
        self.std = x_train.std(axis=0, keepdims=True) + 1e-6

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def state(self) -> dict[str, list[float]]:
        return {"mean": self.mean.ravel().tolist(), "std": self.std.ravel().tolist()}

