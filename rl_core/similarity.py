"""Cosine search over stored window embeddings: "find more of this call".

A :class:`WindowIndex` keeps the L2-normalised vectors of every window as float16 in one flat file
(``vectors.f16``, memory-mapped; half the bytes of float32, and the ranking is unchanged to a few 1e-4 of cosine:
see bench/RESULTS.md). Search is exact (a matrix product over the memory map, in chunks) while the index holds
at most ``exact_limit`` windows; past that a faiss IVF index (inverted lists over k-means cells, vectors stored
as float16) answers instead. It is trained once on the vectors present when the limit is crossed and then grows
with every ``add``, so a growing project never rebuilds it. ``recall_at_k`` measures it against exact search.

Files in the index folder: ``vectors.f16`` (rows in insertion order), ``keys.i64`` (each row's key: two int64,
in a project the file id and the window index),
``index.json`` (dimension and committed row count) and ``ivf.faiss`` when the approximate index exists. Rows
past the committed count (an interrupted ``add``) are ignored and overwritten by the next one.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rl_core.atomic import write_text_atomic
from rl_core.errors import ConfigError

log = logging.getLogger(__name__)

#: above this many windows the approximate index answers (exact search then takes > ~50 ms per query here)
EXACT_LIMIT = 100_000
#: rows converted to float32 at a time while building the approximate index (64k x 1024 x 4 B = 256 MB)
CHUNK_ROWS = 65_536
#: rows converted to float32 at a time when every row is scored (exact search, a classifier over a project): a
#: 4096 x 1024 chunk (16 MB) stays in the CPU's cache between the conversion and the products, so a million rows
#: cost one read of the float16 memory map instead of several passes over 256-MB chunks (bench/RESULTS.md)
SCAN_ROWS = 4_096


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ConfigError(f"expected (n, dim) vectors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ConfigError("the vectors contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


@dataclass
class SearchHits:
    """Top matches of one query: (k, 2) keys of the windows and their cosine similarities, best first."""

    keys: np.ndarray
    similarities: np.ndarray

    def __len__(self) -> int:
        return int(self.keys.shape[0])


def _as_float32(rows: np.ndarray) -> np.ndarray:
    """float16 rows as float32 (through torch: numpy's float16 conversion is about 10x slower)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(rows)).float().numpy()


def float32_chunks(rows: np.ndarray, chunk: int = SCAN_ROWS):
    """``(start, tensor)`` for consecutive ``chunk``-row blocks of a (memory-mapped) matrix, as float32 torch
    tensors. The tensor is one buffer reused for every block: use it before taking the next."""
    import torch

    n, dim = rows.shape
    buffer = torch.empty((min(chunk, n), dim), dtype=torch.float32)
    for lo in range(0, n, chunk):
        with warnings.catch_warnings():  # read-only memory map: torch only reads it
            warnings.simplefilter("ignore", UserWarning)
            block = torch.from_numpy(np.asarray(rows[lo:lo + chunk]))
        out = buffer[: block.shape[0]]
        out.copy_(block)  # float16 -> float32 with vector instructions (numpy's conversion is ~10x slower)
        yield lo, out


def _nlist_for(n: int) -> int:
    """IVF cells: about 4 * sqrt(n) (faiss's guidance), a power of two, at most 4096."""
    return int(min(4096, 2 ** round(np.log2(max(16.0, 4 * np.sqrt(n))))))


class WindowIndex:
    """Append-only store of window vectors with exact and approximate cosine search."""

    def __init__(self, folder: str | Path, dim: int | None = None, exact_limit: int = EXACT_LIMIT,
                 nprobe: int = 64) -> None:
        self.folder = Path(folder)
        self.exact_limit = int(exact_limit)
        self.nprobe = int(nprobe)
        self._lock = threading.Lock()
        meta_path = self.folder / "index.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if dim is not None and int(meta["dim"]) != int(dim):
                raise ConfigError(f"{self.folder}: the index holds {meta['dim']}-d vectors, not {dim}-d; "
                                  "vectors of another model need their own index")
            self.dim, self.count = int(meta["dim"]), int(meta["count"])
        elif dim is None:
            raise ConfigError(f"{self.folder}: no search index here yet (analyse recordings with embeddings first)")
        else:
            self.dim, self.count = int(dim), 0
        self._ivf = None
        if (self.folder / "ivf.faiss").is_file():
            import faiss

            self._ivf = faiss.read_index(str(self.folder / "ivf.faiss"))
            if self._ivf.ntotal != self.count:  # an interrupted add: rebuild the approximate part from the rows
                log.warning("%s: approximate index out of step with the vectors; rebuilding it", self.folder)
                self._ivf = None
                self._build_ivf()

    # ------------------------------------------------------------------ storage
    @property
    def approximate(self) -> bool:
        """Whether searches use the approximate (IVF) index."""
        return self._ivf is not None

    def vectors(self) -> np.ndarray:
        """(count, dim) float16 normalised vectors, memory-mapped (read-only)."""
        if self.count == 0:
            return np.zeros((0, self.dim), dtype=np.float16)
        return np.memmap(self.folder / "vectors.f16", dtype=np.float16, mode="r", shape=(self.count, self.dim))

    def keys(self) -> np.ndarray:
        """(count, 2) int64 keys in row order (memory-mapped)."""
        if self.count == 0:
            return np.zeros((0, 2), dtype=np.int64)
        return np.memmap(self.folder / "keys.i64", dtype=np.int64, mode="r", shape=(self.count, 2))

    def _write_meta(self) -> None:
        write_text_atomic(json.dumps({"dim": self.dim, "count": self.count, "format": 1}), self.folder / "index.json")

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Append windows with their (N, 2) keys (file id, window index); committed when this returns."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1, 2)
        x = normalise(vectors)
        if x.shape[1] != self.dim:
            raise ConfigError(f"vectors have {x.shape[1]} dimensions; this index holds {self.dim}-d vectors")
        if x.shape[0] != keys.shape[0]:
            raise ConfigError(f"{keys.shape[0]} keys for {x.shape[0]} vectors")
        if keys.shape[0] == 0:
            return
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            for name, data, itemsize in (("vectors.f16", x.astype(np.float16), 2 * self.dim), ("keys.i64", keys, 16)):
                with open(self.folder / name, "ab") as handle:
                    handle.truncate(self.count * itemsize)  # drop rows of an interrupted add
                    handle.seek(self.count * itemsize)
                    handle.write(np.ascontiguousarray(data).tobytes())
            first = self.count
            self.count += x.shape[0]
            if self._ivf is not None:
                self._ivf.add(x)
                self._save_ivf()
            elif self.count > self.exact_limit:
                self._build_ivf()
            self._write_meta()
            log.debug("index %s: %d -> %d windows", self.folder, first, self.count)

    def _build_ivf(self) -> None:
        import faiss

        rows = self.vectors()
        nlist = _nlist_for(self.count)
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(self.count, size=min(self.count, 64 * nlist), replace=False))
        quantiser = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFScalarQuantizer(quantiser, self.dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                            faiss.METRIC_INNER_PRODUCT)
        ivf.train(_as_float32(rows[sample]))
        for lo in range(0, self.count, CHUNK_ROWS):
            ivf.add(_as_float32(rows[lo:lo + CHUNK_ROWS]))
        self._ivf = ivf
        self._save_ivf()
        log.info("built an approximate index over %d windows (%d cells)", self.count, nlist)

    def _save_ivf(self) -> None:
        import faiss

        tmp = self.folder / ".ivf.faiss.tmp"
        faiss.write_index(self._ivf, str(tmp))
        tmp.replace(self.folder / "ivf.faiss")

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, top_n: int = 100, exact: bool | None = None) -> list[SearchHits]:
        """The ``top_n`` windows most similar (cosine) to each query vector.

        Several query vectors (clips combined into one query) should be averaged by the caller first;
        ``exact=True`` forces the matrix product even when an approximate index exists.
        """
        if self.count == 0:
            raise ConfigError("the search index is empty: analyse recordings with embeddings first")
        q = normalise(queries)
        if q.shape[1] != self.dim:
            raise ConfigError(f"the query has {q.shape[1]} dimensions but the project's windows have {self.dim}: "
                              "embed the query with the project's model")
        top_n = max(1, min(int(top_n), self.count))
        use_exact = exact if exact is not None else self._ivf is None
        if use_exact:
            rows, sims = self._exact(q, top_n)
        else:
            self._ivf.nprobe = self.nprobe
            sims, rows = self._ivf.search(q, top_n)
        keys = self.keys()
        hits = []
        for r, s in zip(rows, sims):
            keep = r >= 0
            hits.append(SearchHits(np.asarray(keys[r[keep]]), s[keep].astype(np.float32)))
        return hits

    def _exact(self, q: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        q_t = torch.from_numpy(q)
        sims = np.empty((self.count, q.shape[0]), dtype=np.float32)  # 4 MB per query per million windows
        for lo, chunk in float32_chunks(self.vectors()):
            sims[lo:lo + chunk.shape[0]] = (chunk @ q_t.T).numpy()
        best = np.argpartition(-sims, top_n - 1, axis=0)[:top_n].T if top_n < self.count else \
            np.tile(np.arange(self.count), (q.shape[0], 1))
        best_sims = np.take_along_axis(sims.T, best, axis=1)
        order = np.argsort(-best_sims, axis=1, kind="stable")
        return np.take_along_axis(best, order, axis=1), np.take_along_axis(best_sims, order, axis=1)


def recall_at_k(approximate: list[SearchHits], exact: list[SearchHits]) -> float:
    """Mean share of the exact top-k windows that the approximate search also returned."""
    if not exact:
        raise ConfigError("no queries to compare")
    shares = [len({tuple(k) for k in a.keys.tolist()} & {tuple(k) for k in e.keys.tolist()}) / max(len(e), 1)
              for a, e in zip(approximate, exact)]
    return float(np.mean(shares))
