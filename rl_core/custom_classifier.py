"""Your own classifier on a backbone's window embeddings ("agile modelling").

Labelled windows (positives for one or more new class names; negatives from review or random windows) train a
probe of :mod:`rl_core.probes` (linear by default) on the stored embeddings, one sigmoid output per class, so a
window may hold several calls or none. Cross-validated precision, recall and average precision say how well it
does before it is applied to every window of a project.

A classifier is saved as two files side by side: ``NAME.safetensors`` (the probe's weights and the z-score
statistics of the training embeddings) and ``NAME.yaml`` (its card: backbone model, layer, aggregation, classes,
label counts, metrics, date). Loading checks both and refuses a classifier for another backbone.

Window embeddings are L2-normalised before the z-score (training and scoring alike), so a classifier trained on a
project's stored unit vectors scores the raw embeddings of a fresh recording the same way.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rl_core.atomic import write_bytes_atomic, write_text_atomic
from rl_core.configs import ProbeConfig, format_validation_error
from rl_core.errors import ConfigError
from rl_core.probes import build_probe_from_config_offline

log = logging.getLogger(__name__)

#: windows scored per matrix product when applying a classifier (bounded memory on a million windows)
APPLY_CHUNK = 131_072
#: L2 penalty on the probe's weights (z-scored 1024-d inputs, tens of labels: strong)
L2_PENALTY = 1e-2


class ClassifierCard(BaseModel):
    """What a saved classifier is: enough to refuse the wrong backbone and to tell users how it was made."""

    model_config = ConfigDict(extra="forbid")

    format: int = 1
    backbone: str = Field(description="registry name of the model whose embeddings it takes")
    layer: str = "last_layer"
    aggregation: str = "mean"
    embedding_dim: int = Field(gt=0)
    classes: list[str] = Field(min_length=1)
    probe_type: str = "linear"
    positives: dict[str, int] = Field(default_factory=dict)
    negatives: int = 0
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    input_norm: str = "l2"
    created: str = ""
    train_seconds: float = 0.0


class CustomClassifier:
    """A trained probe plus its card; :meth:`scores` gives (N, classes) sigmoid scores for window embeddings."""

    def __init__(self, card: ClassifierCard, head: torch.nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
        self.card = card
        self.head = head.eval()
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, -1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, -1)

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def check_backbone(self, backbone: str, layer: str = "last_layer", dim: int | None = None) -> None:
        """Refuse embeddings of another model/layer, with what the classifier needs."""
        if backbone != self.card.backbone or layer != self.card.layer:
            raise ConfigError(
                f"this classifier was trained on {self.card.backbone} embeddings (layer {self.card.layer}); "
                f"these come from {backbone} (layer {layer}). Use it with {self.card.backbone}, or train a new "
                f"one on {backbone}")
        if dim is not None and dim != self.card.embedding_dim:
            raise ConfigError(f"the classifier takes {self.card.embedding_dim}-d embeddings, got {dim}-d")

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, classes) scores in [0, 1], computed chunk by chunk (memory-mapped float16 input is fine)."""
        x = embeddings if isinstance(embeddings, np.memmap) else np.asarray(embeddings)
        if x.ndim != 2 or x.shape[1] != self.card.embedding_dim:
            raise ConfigError(f"expected (windows, {self.card.embedding_dim}) embeddings, got {tuple(x.shape)}")
        out = np.empty((x.shape[0], len(self.classes)), dtype=np.float32)
        linear = self._folded_linear()
        mean, std = torch.from_numpy(self.mean), torch.from_numpy(self.std)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only memory maps: torch only reads them
            for lo in range(0, x.shape[0], APPLY_CHUNK):
                # torch converts float16 rows with vector instructions (numpy's conversion is ~10x slower)
                chunk = torch.from_numpy(np.ascontiguousarray(x[lo:lo + APPLY_CHUNK])).float()
                if linear is not None:
                    weight, bias = linear
                    norms = torch.linalg.vector_norm(chunk, dim=1, keepdim=True).clamp_min(1e-12)
                    logits = (chunk @ weight.T) / norms + bias
                else:
                    chunk = (torch.nn.functional.normalize(chunk, dim=1) - mean) / std
                    logits = self.head(chunk)
                out[lo:lo + APPLY_CHUNK] = torch.sigmoid(logits).numpy()
        return out

    def _folded_linear(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For a linear probe, the z-score folded into its weights: sigmoid(x.W'/|x| + b') in one matrix product
        (three fewer passes over a million windows)."""
        if self.card.probe_type != "linear" or not isinstance(getattr(self.head, "classifier", None), torch.nn.Linear):
            return None
        layer = self.head.classifier
        if layer.in_features != self.card.embedding_dim:
            return None
        weight = layer.weight.detach() / torch.from_numpy(self.std)
        bias = layer.bias.detach() - weight @ torch.from_numpy(self.mean).ravel()
        return weight.contiguous(), bias

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.safetensors`` and ``<path>.yaml`` (atomically); returns both paths."""
        from safetensors.torch import save

        stem = Path(path)
        stem = stem.with_suffix("") if stem.suffix in (".safetensors", ".yaml") else stem
        tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        tensors["standardize.mean"] = torch.from_numpy(self.mean.ravel().copy())
        tensors["standardize.std"] = torch.from_numpy(self.std.ravel().copy())
        weights = write_bytes_atomic(save(tensors, metadata={"format": "rl_core.custom_classifier"}),
                                     stem.with_name(stem.name + ".safetensors"))
        card = write_text_atomic(yaml.safe_dump(self.card.model_dump(), sort_keys=False, allow_unicode=True),
                                 stem.with_name(stem.name + ".yaml"))
        return weights, card

    @classmethod
    def load(cls, path: str | Path) -> "CustomClassifier":
        """Read a classifier saved by :meth:`save` (either file's path, or the common stem)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        stem = Path(path)
        stem = stem.with_suffix("") if stem.suffix in (".safetensors", ".yaml") else stem
        weights, card_path = stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".yaml")
        for needed in (weights, card_path):
            if not needed.is_file():
                raise ConfigError(f"{needed.name}: not found; a classifier is a .safetensors file with its .yaml "
                                  "card beside it (both written by `save`)")
        try:
            card = ClassifierCard.model_validate(yaml.safe_load(card_path.read_text(encoding="utf-8")) or {})
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, card_path.name)) from None
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{card_path.name}: not a classifier card ({type(err).__name__})") from None
        try:
            tensors = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as err:
            raise ConfigError(f"{weights.name}: not a safetensors classifier ({err})") from None
        head = _new_head(card.probe_type, card.embedding_dim, len(card.classes))
        state = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
        try:
            head.load_state_dict(state)
            mean, std = tensors["standardize.mean"].numpy(), tensors["standardize.std"].numpy()
        except (RuntimeError, KeyError) as err:
            raise ConfigError(f"{weights.name}: the weights do not match the card {card_path.name} ({err})") from None
        return cls(card, head, mean, std)


def _new_head(probe_type: str, dim: int, num_classes: int) -> torch.nn.Module:
    config = ProbeConfig(probe_type=probe_type, dropout_rate=0.0)
    return build_probe_from_config_offline(config, input_dim=dim, num_classes=num_classes)


def _targets(labels: list[list[str]] | list[str], classes: list[str]) -> np.ndarray:
    """Multi-hot (N, C) targets; an empty label list (or "negative") is a negative window."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for row, window_labels in enumerate(labels):
        items = [window_labels] if isinstance(window_labels, str) else list(window_labels)
        for item in items:
            if item and item != "negative":
                y[row, index[item]] = 1.0
    return y


def _fit_head(x: np.ndarray, y: np.ndarray, probe_type: str, seed: int) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """Full-batch L-BFGS on an L2-penalised, class-balanced BCE: a few hundred labelled windows fit in well under a
    second (mini-batch Adam over 60 epochs took ~2.5 s per fit on the 2-core machine, bench/RESULTS.md)."""
    from rl_core.similarity import normalise

    x = normalise(x)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = torch.from_numpy(((x - mean) / std).astype(np.float32))
    targets = torch.from_numpy(np.asarray(y, dtype=np.float32))
    torch.manual_seed(seed)
    head = _new_head(probe_type, x.shape[1], y.shape[1]).train()
    positives = targets.sum(dim=0)
    # few positives among many negatives: weigh each class's positives as much as its negatives
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=((len(targets) - positives) / positives.clamp(min=1)).clamp(1, 100))
    weights = [p for name, p in head.named_parameters() if p.ndim > 1]
    optimiser = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=40, history_size=10, tolerance_change=1e-6,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        # few examples, many dimensions: a strong L2 penalty keeps the probe from memorising them
        loss = loss_fn(head(z), targets) + L2_PENALTY * sum((w ** 2).sum() for w in weights)
        loss.backward()
        return loss

    optimiser.step(closure)
    return head.eval(), mean, std


def _metrics(y: np.ndarray, scores: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    from sklearn.metrics import average_precision_score, precision_score, recall_score

    out = {}
    for c, name in enumerate(classes):
        truth, s = y[:, c].astype(int), scores[:, c]
        if truth.sum() == 0 or truth.sum() == truth.size:
            continue
        pred = (s >= 0.5).astype(int)
        out[name] = {"precision": float(precision_score(truth, pred, zero_division=0)),
                     "recall": float(recall_score(truth, pred, zero_division=0)),
                     "average_precision": float(average_precision_score(truth, s)),
                     "positives": int(truth.sum())}
    return out


def train_classifier(
    embeddings: np.ndarray,
    labels: list[list[str]] | list[str],
    backbone: str,
    *,
    classes: list[str] | None = None,
    layer: str = "last_layer",
    aggregation: str = "mean",
    probe_type: str = "linear",
    folds: int = 3,
    seed: int = 0,
) -> CustomClassifier:
    """Train on labelled windows; the card's metrics are cross-validated (``folds`` folds, stratified by class).

    ``labels[i]`` is the class name(s) of window ``i``; ``[]``, ``""`` or ``"negative"`` marks a negative.
    Every class needs at least 2 positives and there must be at least 2 negatives.
    """
    start = time.perf_counter()
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(labels):
        raise ConfigError(f"{len(labels)} labels for embeddings of shape {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ConfigError("the embeddings contain NaN or infinite values")
    named = sorted({n for row in labels for n in ([row] if isinstance(row, str) else row) if n and n != "negative"})
    classes = list(classes) if classes else named
    if not classes:
        raise ConfigError("no positive labels: mark at least 2 windows as positives of a class name")
    unknown = sorted(set(named) - set(classes))
    if unknown:
        raise ConfigError(f"labels {unknown} are not among the classes {classes}")
    y = _targets(labels, classes)
    counts = {c: int(y[:, i].sum()) for i, c in enumerate(classes)}
    negatives = int((y.sum(axis=1) == 0).sum())
    too_few = [c for c, n in counts.items() if n < 2]
    if too_few or negatives < 2:
        what = f"class(es) {too_few} have fewer than 2 positives" if too_few else f"only {negatives} negative(s)"
        raise ConfigError(f"not enough labels to train: {what}; label more windows (2 of each at least)")

    metrics: dict[str, dict[str, float]] = {}
    k = min(int(folds), min(counts.values()), negatives)
    if k >= 2:
        from sklearn.model_selection import StratifiedKFold

        strata = np.where(y.sum(axis=1) == 0, -1, y.argmax(axis=1))
        oof = np.zeros_like(y)
        for train_idx, test_idx in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, strata):
            head, mean, std = _fit_head(x[train_idx], y[train_idx], probe_type, seed)
            fold_model = CustomClassifier(ClassifierCard(backbone=backbone, embedding_dim=x.shape[1],
                                                         classes=classes), head, mean, std)
            oof[test_idx] = fold_model.scores(x[test_idx])
        metrics = _metrics(y, oof, classes)
    head, mean, std = _fit_head(x, y, probe_type, seed)
    card = ClassifierCard(
        backbone=backbone, layer=layer, aggregation=aggregation, embedding_dim=int(x.shape[1]), classes=classes,
        probe_type=probe_type, positives=counts, negatives=negatives, metrics=metrics,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        train_seconds=round(time.perf_counter() - start, 3),
    )
    log.info("trained a %s classifier for %s on %d windows in %.2f s", probe_type, classes, len(labels),
             card.train_seconds)
    return CustomClassifier(card, head, mean, std)


def suggest_next(scores: np.ndarray, labelled: np.ndarray, n: int = 10) -> dict[str, np.ndarray]:
    """Windows to label next for one class: the top-scored unlabelled ones and the most uncertain (nearest 0.5)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    free = np.flatnonzero(~np.asarray(labelled, dtype=bool).ravel())
    top = free[np.argsort(-s[free], kind="stable")[:n]]
    rest = np.setdiff1d(free, top, assume_unique=True)
    uncertain = rest[np.argsort(np.abs(s[rest] - 0.5), kind="stable")[:n]]
    return {"top": top, "uncertain": uncertain}


def load_for_backbone(path: str | Path, backbone: str, layer: str = "last_layer") -> CustomClassifier:
    """A saved classifier (either file's path, or their stem), refused at once when it was trained on embeddings of
    another model or layer than ``backbone``'s (before that model is loaded or any audio decoded)."""
    classifier = CustomClassifier.load(path)
    classifier.check_backbone(backbone, layer, dim=None)
    return classifier


def classifier_label(source: str = "") -> str:
    """How the classifier's rows are marked (the ``common_name`` of its classes in tables and exports)."""
    return f"your classifier: {source}" if source else "your classifier"


def classifier_result(classifier: CustomClassifier, result, source: str = ""):
    """A recording's windows scored by the classifier, as a ``RecordingResult`` of its classes (their common name
    is :func:`classifier_label`), so tables, timelines and exports treat it as a model's result."""
    from dataclasses import replace

    if result.embeddings is None:
        raise ConfigError(f"{result.name}: no embeddings were computed, so the classifier cannot score it")
    classes = classifier.classes
    return replace(result, scores=classifier.scores(result.embeddings), embeddings=None, labels=classes,
                   common_names=[classifier_label(source)] * len(classes), class_mask=None, top_indices=None,
                   top_scores=None, calls=None, call_features=None, model=classifier.card.backbone)


def classifier_table(classifier: CustomClassifier, result, min_score: float = 0.0, source: str = "") -> pd.DataFrame:
    """Rows of a recording's windows scored by the classifier, with the prediction CSV's columns (``rank`` is the
    class's rank within the classifier; ``common_name`` says it is your classifier, :func:`classifier_label`)."""
    return classifier_result(classifier, result, source).top_k_table(len(classifier.classes), min_score)


def describe(classifier: CustomClassifier) -> dict[str, Any]:
    """The card as a plain dict (for the UI and the CLI)."""
    return classifier.card.model_dump()
