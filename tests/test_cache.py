"""The model cache: same object on repeat, one load under concurrency, byte-budget LRU eviction."""

from __future__ import annotations

import threading
import time

import pytest

from rl_core.cache import ModelCache, get_model, model_cache
from rl_core.errors import UnknownModelError
from rl_core.loading import load_model


class CountingLoader:
    """The real load_model, counting calls and slowed a little so threads overlap."""

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, name, **kwargs):
        with self.lock:
            self.calls.append(name)
        time.sleep(0.2)
        return load_model(name, **kwargs)


def test_repeated_get_returns_same_object():
    first = get_model("birdnet_v2_4", device="cpu")
    assert get_model("birdnet_v2_4", device="cpu") is first
    assert ("birdnet_v2_4", None, "cpu", False, None) in model_cache.keys()


def test_concurrent_requests_load_once():
    loader = CountingLoader()
    cache = ModelCache(loader=loader)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("birdnet_v2_4", device="cpu"))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loader.calls == ["birdnet_v2_4"]
    assert len(results) == 6 and all(r is results[0] for r in results)
    assert cache.stats.misses == 1 and cache.stats.hits == 0


def test_byte_budget_evicts_least_recently_used():
    loader = CountingLoader()
    cache = ModelCache(budget_bytes=60 * 2**20, loader=loader)  # room for one BirdNET (51.7 MB), not two
    a = cache.get("birdnet_v2_4", device="cpu")
    b = cache.get("birdnet_v2_4", device="cpu", return_features_only=True)
    assert a is not b
    assert cache.stats.evictions == 1
    assert cache.keys() == [("birdnet_v2_4", None, "cpu", True, None)]


def test_failed_load_is_reported_and_not_cached():
    cache = ModelCache()
    with pytest.raises(UnknownModelError):
        cache.get("no_such_model", device="cpu")
    assert cache.keys() == []


def test_precision_is_part_of_the_key_and_reaches_the_model(tmp_path):
    import torch
    from safetensors.torch import save_file

    from rl_core import build_model
    from rl_core.errors import ConfigError

    torch.manual_seed(0)
    weights = tmp_path / "eat.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("esp_aves2_eat_all").state_dict().items()}, str(weights))
    cache = ModelCache()
    fast = cache.get("esp_aves2_eat_all", device="cpu", checkpoint_path=str(weights), precision="bfloat16")
    assert fast.precision == "bfloat16" and fast.encoder.blocks[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert cache.get("esp_aves2_eat_all", device="cpu", checkpoint_path=str(weights), precision="bfloat16") is fast
    plain = cache.get("esp_aves2_eat_all", device="cpu", checkpoint_path=str(weights))
    assert plain is not fast and plain.precision == "float32"
    assert cache.get("esp_aves2_eat_all", device="cpu", checkpoint_path=str(weights), precision="float32") is plain
    assert cache.get("birdnet_v2_4", device="cpu", precision="float32").name == "birdnet"
    assert cache.stats.misses == 3 and cache.stats.hits == 2
    with pytest.raises(ConfigError, match="unknown argument"):  # BirdNET has no bf16 path
        cache.get("birdnet_v2_4", device="cpu", precision="bfloat16")
    assert ("birdnet_v2_4", None, "cpu", False, "bfloat16") not in cache.keys()
