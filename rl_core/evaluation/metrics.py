"""Metrics, all through scikit-learn: probe classification, multi-label, retrieval and clustering.

* classification: accuracy, balanced accuracy, macro F1, mAP (macro average precision, one-vs-rest) and AUROC
  (macro one-vs-rest), from class scores;
* multi-label: mAP (= BirdSet's cmAP: macro AP over classes with a positive), AUROC, macro F1 at 0.5;
* retrieval on embeddings (cosine similarity): R-AUC (ROC-AUC of same-label vs different-label pairs) and
  precision@1 (the nearest other clip has the same label);
* clustering: k-means (k = number of classes) on L2-normalised embeddings, NMI and ARI against the labels.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import (
    accuracy_score,
    adjusted_rand_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    normalized_mutual_info_score,
    roc_auc_score,
)

from rl_core.errors import ConfigError


def _present_classes(y_true: np.ndarray, n_classes: int) -> list[int]:
    present = sorted(set(int(v) for v in y_true))
    if any(c < 0 or c >= n_classes for c in present):
        raise ConfigError(f"labels {present} out of range for {n_classes} classes")
    return present


def classification_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Single-label metrics from (N,) class indices and (N, C) scores (probabilities or logits)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != y_true.shape[0]:
        raise ConfigError(f"scores must be (N, C) with N={y_true.shape[0]}, got {scores.shape}")
    pred = scores.argmax(axis=1)
    labels = list(range(scores.shape[1]))
    out = {
        "accuracy": float(accuracy_score(y_true, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
        "macro_f1": float(f1_score(y_true, pred, labels=_present_classes(y_true, scores.shape[1]), average="macro",
                                   zero_division=0)),
    }
    onehot = np.eye(scores.shape[1])[y_true]
    present = [c for c in labels if onehot[:, c].any() and not onehot[:, c].all()]
    if present:
        out["mAP"] = float(np.mean([average_precision_score(onehot[:, c], scores[:, c]) for c in present]))
        out["AUROC"] = float(np.mean([roc_auc_score(onehot[:, c], scores[:, c]) for c in present]))
    return out


def multilabel_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Multi-label metrics from (N, C) multi-hot targets and (N, C) probabilities."""
    y_true = np.asarray(y_true, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if y_true.shape != scores.shape:
        raise ConfigError(f"targets {y_true.shape} and scores {scores.shape} differ in shape")
    has_pos = y_true.any(axis=0)
    varied = has_pos & ~y_true.all(axis=0)
    out = {"macro_f1": float(f1_score(y_true[:, has_pos], (scores[:, has_pos] >= threshold).astype(int),
                                      average="macro", zero_division=0))}
    if has_pos.any():
        out["mAP"] = float(average_precision_score(y_true[:, has_pos], scores[:, has_pos], average="macro"))
    if varied.any():
        out["AUROC"] = float(roc_auc_score(y_true[:, varied], scores[:, varied], average="macro"))
    return out


def _cosine(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x @ x.T


def retrieval_metrics(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """R-AUC and precision@1 with cosine similarity; every clip queries all others."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    if n < 2:
        raise ConfigError("retrieval needs at least two clips")
    sim = _cosine(embeddings)
    same = labels[:, None] == labels[None, :]
    upper = np.triu_indices(n, k=1)
    out: dict[str, float] = {}
    pair_same = same[upper]
    if pair_same.any() and not pair_same.all():
        out["R-AUC"] = float(roc_auc_score(pair_same, sim[upper]))
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    out["P@1"] = float(np.mean(labels[nearest] == labels))
    return out


def clustering_metrics(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """k-means with k = number of distinct labels on L2-normalised embeddings; NMI and ARI."""
    labels = np.asarray(labels)
    k = len(set(labels.tolist()))
    if k < 2:
        raise ConfigError("clustering needs at least two classes")
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    assigned = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    return {
        "NMI": float(normalized_mutual_info_score(labels, assigned)),
        "ARI": float(adjusted_rand_score(labels, assigned)),
    }


#: leaderboard names of the metric keys above
METRIC_NAMES = {
    "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro F1", "mAP": "mAP",
    "AUROC": "AUROC", "R-AUC": "R-AUC", "P@1": "P@1", "NMI": "NMI", "ARI": "ARI",
}
