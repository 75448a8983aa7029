"""A thread-safe, memory-bounded LRU cache of loaded models.

Keyed by (model, checkpoint, device, features mode, precision). Models stay on their device between requests
(GPU if available, else MPS, else CPU); concurrent requests for the same model load it once; when the byte
budget (parameters + buffers) is exceeded the least recently used models are dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Hashable

from rl_core.loading import load_model, model_device
from rl_core.models.base import ModelBase

log = logging.getLogger(__name__)

DEFAULT_BUDGET_BYTES = int(float(os.environ.get("RL_CORE_MODEL_CACHE_GB", "8")) * 2**30)

CacheKey = tuple[str, str | None, str, bool, str | None]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    load_seconds: dict[str, float] = field(default_factory=dict)


class ModelCache:
    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES, loader: Callable[..., ModelBase] = load_model) -> None:
        self.budget_bytes = budget_bytes
        self._loader = loader
        self._lock = threading.Lock()
        self._models: "OrderedDict[CacheKey, ModelBase]" = OrderedDict()
        self._loading: dict[CacheKey, Future] = {}
        self.stats = CacheStats()

    def _bytes(self) -> int:
        return sum(m.memory_bytes() for m in self._models.values())

    def get(
        self,
        name: str,
        device: str | None = None,
        checkpoint_path: str | None = None,
        return_features_only: bool = False,
        precision: str | None = None,
    ) -> ModelBase:
        """The cached model, loading it on first use. ``precision`` ("float32" / "bfloat16", where the family
        offers it) is passed to the model only when given, so families without the option keep working."""
        if precision == "float32":
            precision = None  # every family's default: one cache entry, and no argument for models without the option
        target = str(model_device(name, device))  # the device load_model would choose: one rule
        key: CacheKey = (name, checkpoint_path, target, return_features_only, precision)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                self.stats.hits += 1
                return model
            pending = self._loading.get(key)
            owner = pending is None
            if owner:
                pending = Future()
                self._loading[key] = pending
                self.stats.misses += 1
        if not owner:
            return pending.result()  # another thread is loading it: wait for that load, re-raise its error
        try:
            start = time.perf_counter()
            options = {} if precision is None else {"precision": precision}
            model = self._loader(name, device=target, checkpoint_path=checkpoint_path,
                                 return_features_only=return_features_only, **options)
            self.stats.load_seconds[name] = time.perf_counter() - start
        except BaseException as err:
            with self._lock:
                self._loading.pop(key, None)
            pending.set_exception(err)
            raise
        with self._lock:
            self._models[key] = model
            self._loading.pop(key, None)
            self._evict_over_budget(keep=key)
        pending.set_result(model)
        log.info("loaded %s on %s in %.2f s", name, target, self.stats.load_seconds[name])
        return model

    def _evict_over_budget(self, keep: CacheKey) -> None:
        while self._bytes() > self.budget_bytes and len(self._models) > 1:
            oldest = next(iter(self._models))
            if oldest == keep:
                break
            self._models.pop(oldest)
            self.stats.evictions += 1
            log.info("evicted %s from the model cache (budget %d bytes)", oldest[0], self.budget_bytes)

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


model_cache = ModelCache()


def get_model(
    name: str, device: str | None = None, checkpoint_path: str | None = None, return_features_only: bool = False,
    precision: str | None = None,
) -> ModelBase:
    """Load ``name`` once and return the same object on later calls (process-wide cache).

    ``device=None`` resolves as in ``load_model`` (the spec's device, by default cuda, else mps, else cpu)."""
    return model_cache.get(name, device=device, checkpoint_path=checkpoint_path,
                           return_features_only=return_features_only, precision=precision)
