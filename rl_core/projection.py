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


def pool_windows(embeddings: np.ndarray, pooling: Pooling = "mean") -> np.ndarray:
    """(N, D) window embeddings -> (D,) by mean or max over windows."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ConfigError(f"expected (windows, dim) embeddings with at least one window, got {embeddings.shape}")
    if pooling == "mean":
        return embeddings.mean(axis=0)
    if pooling == "max":
        return embeddings.max(axis=0)
    raise ConfigError(f"unknown pooling '{pooling}': use mean or max")


def file_embedding(
    model: Any,
    path: str | Path,
    layer: str = "last_layer",
    pooling: Pooling = "mean",
    progress: Callable[[float, str], None] | None = None,
) -> np.ndarray:
    """The (D,) embedding of one recording from ``layer`` of ``model``, pooled over windows (and tokens)."""
    if pooling not in ("mean", "max"):
        raise ConfigError(f"unknown pooling '{pooling}': use mean or max")
    layers = model.list_layers()
    if layer in ("last_layer", "", None) or not layers:
        if layer not in ("last_layer", "", None):
            raise ConfigError(f"{type(model).__name__} exposes no intermediate layers; use layer 'last_layer'")
        from rl_core.inference import run_file

        result = run_file(model, path, want_scores=False, want_embeddings=True, progress=progress)
        return pool_windows(result.embeddings, pooling)

    # An intermediate layer: hook it window by window (rl_core.audio streams long files).
    from rl_core.audio import audio_info, iter_windows

    window_s = model.window_samples / model.sample_rate
    total = max(audio_info(path).duration_s / window_s, 1.0)
    rows = []
    for i, (_start, window) in enumerate(iter_windows(path, model.sample_rate, window_s, window_s)):
        emb = model.extract_embeddings(window[None, :], layers=layer, aggregation=pooling)
        rows.append(emb.detach().float().cpu().numpy()[0])
        if progress is not None:
            progress(min((i + 1) / total, 1.0), f"{Path(path).name}: window {i + 1}")
    return pool_windows(np.stack(rows), pooling)


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
