"""One embedding per recording, and 2-D projections of many (PCA, t-SNE, UMAP) for embedding maps.

A recording's embedding is the pooled sequence of its window embeddings: ``mean`` or ``max`` over windows
(and, for an intermediate layer, over that layer's tokens first).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from rl_core.errors import ConfigError

log = logging.getLogger(__name__)

Pooling = Literal["mean", "max"]
METHODS = ("UMAP", "PCA", "t-SNE")


def file_embedding(
    model: Any,
    path: str | Path,
    layer: str = "last_layer",
    pooling: Pooling = "mean",
    progress: Callable[[float, str], None] | None = None,
    limits: Any = None,
) -> np.ndarray:
    """The (D,) embedding of one recording from ``layer`` of ``model``: ``rl_core.inference.analyse_recording``'s
    window embeddings (tokens aggregated by ``pooling``), pooled over windows by ``pooling``."""
    from rl_core.inference import analyse_recording

    if pooling not in ("mean", "max"):
        raise ConfigError(f"unknown pooling '{pooling}': use mean or max")
    result = analyse_recording(model, path, layers=layer or "last_layer", aggregation=pooling, want_scores=False,
                               progress=progress, limits=limits)
    return result.pooled_embedding(pooling)


#: call detectors (BatDetect2): calls at or above this detection probability become map points
CALL_MIN_PROB = 0.3


def call_embeddings(model: Any, path: str | Path, min_prob: float = CALL_MIN_PROB,
                    progress: Callable[[float, str], None] | None = None, limits: Any = None,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(start times (N,), feature vectors (N, D)) of the calls a call detector finds in one recording, from
    ``rl_core.inference.analyse_recording``; calls below ``min_prob`` detection probability are left out."""
    from rl_core.inference import analyse_recording

    if not model.detects_calls:
        raise ConfigError(f"{type(model).__name__} scores windows and finds no calls; use file_embedding")
    result = analyse_recording(model, path, want_scores=False, progress=progress, limits=limits)
    keep = (result.calls["detection_prob"] >= min_prob).to_numpy()
    return result.calls["start_s"].to_numpy()[keep], np.asarray(result.call_features, dtype=np.float32)[keep]


def project(
    embeddings: np.ndarray,
    method: str = "UMAP",
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    perplexity: float = 30.0,
    standardize: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """(n, D) embeddings -> (n, 2) coordinates.

    Parameters that exceed what ``n`` points allow (UMAP neighbours, t-SNE perplexity) are clipped to the
    largest valid value, and the clipping is logged.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ConfigError(f"expected (n, dim) embeddings, got shape {x.shape}")
    n = x.shape[0]
    if n < 2:
        raise ConfigError(f"a map needs at least 2 recordings, got {n}")
    if not np.isfinite(x).all():
        raise ConfigError("the embeddings contain NaN or infinite values")
    if standardize:
        std = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    if method == "PCA":
        from sklearn.decomposition import PCA

        k = min(2, n, x.shape[1])
        coords = PCA(n_components=k, random_state=seed).fit_transform(x)
    elif method == "t-SNE":
        from sklearn.manifold import TSNE

        p = min(float(perplexity), max((n - 1) / 3.0, 1.0))
        if p != perplexity:
            log.info("t-SNE perplexity %.1f is too large for %d points; using %.1f", perplexity, n, p)
        coords = TSNE(n_components=2, perplexity=p, init="pca" if n > 2 else "random", random_state=seed,
                      metric=metric).fit_transform(x)
    elif method == "UMAP":
        if n < 4:
            raise ConfigError(f"UMAP needs at least 4 recordings (got {n}); use PCA for fewer")
        import umap  # imported here: numba compilation makes the import slow

        k = int(min(max(int(n_neighbors), 2), n - 1))
        if k != n_neighbors:
            log.info("UMAP n_neighbors %d is too large for %d points; using %d", n_neighbors, n, k)
        reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=float(min_dist), metric=metric,
                            random_state=seed, init="spectral" if n > k + 1 else "random", n_jobs=1)
        coords = reducer.fit_transform(x)
    else:
        raise ConfigError(f"unknown projection '{method}': use one of {', '.join(METHODS)}")
    coords = np.asarray(coords, dtype=np.float64)
    if coords.shape[1] < 2:  # PCA on 1-dimensional data
        coords = np.hstack([coords, np.zeros((n, 2 - coords.shape[1]))])
    return coords
