"""AVES / BirdAVES: shapes, layers, embeddings against torchaudio, checkpoint formats (the family contract:
state-dict names against the fixture, inputs, hooks, bf16, is in test_model_contract.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import rl_core
from rl_core.errors import CheckpointMismatchError, CheckpointNotAvailableError, ConfigError
from rl_core.models import aves as aves_module

SR = 16000
LAYERS = [f"model.encoder.transformer.layers.{i}" for i in range(12)]


def frames_for(samples: int) -> int:
    """Frames of the conv feature extractor: 400-sample receptive field, 320-sample stride."""
    return (samples - 400) // 320 + 1


def clips(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    g = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    out = [0.3 * np.sin(2 * np.pi * (1000 + 500 * i) * t) + 0.05 * g.standard_normal(t.size) for i in range(batch)]
    return torch.from_numpy(np.stack(out).astype(np.float32))


@pytest.fixture(scope="module")
def aves() -> rl_core.ModelBase:
    torch.manual_seed(0)
    return rl_core.build_model("birdaves_biox_base").eval()


# ------------------------------------------------------------------------------------------ names and shapes
def test_shapes(aves):
    audio = clips(2, 1.0)
    with torch.inference_mode():
        features = aves.forward_features(aves.prepare_input(audio))
        embedding = aves(audio)
    assert features.shape == (2, frames_for(16000), 768) == (2, 49, 768)
    assert embedding.shape == (2, 768)
    torch.testing.assert_close(embedding, features.mean(dim=1))
    assert aves.get_embedding_dim() == 768 and aves.sample_rate == SR and not aves.has_cls_token
    assert frames_for(160000) == 499  # 10 s -> T / 320 frames (minus the receptive-field edge)


def test_features_are_the_last_layer_without_final_norm(aves):
    """Like avex and the AVES package: torchaudio's extract_features()[-1], not encoder.forward()."""
    audio = clips(1, 1.0)
    with torch.inference_mode():
        ours = aves.forward_features(aves.prepare_input(audio))
        reference = aves.model.extract_features(audio)[0][-1]
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ layers / embeddings
def test_layers(aves):
    assert aves.list_layers() == LAYERS
    assert rl_core.list_model_layers("birdaves_biox_base") == LAYERS


def test_extract_embeddings(aves):
    audio = clips(2, 0.25)
    t = frames_for(4000)
    last = aves.extract_embeddings(audio)
    with torch.inference_mode():
        torch.testing.assert_close(last, aves(audio))
    torch.testing.assert_close(aves.extract_embeddings(audio, layers=LAYERS[-1]), last)
    torch.testing.assert_close(aves.extract_embeddings(audio, layers=-1), last)
    with torch.inference_mode():
        all_layers = aves.model.extract_features(audio)[0]
    third = aves.extract_embeddings(audio, layers=3, aggregation="none")
    torch.testing.assert_close(third, all_layers[3])
    torch.testing.assert_close(aves.extract_embeddings(audio, layers=-12, aggregation="max"), all_layers[0].amax(dim=1))
    stacked = aves.extract_embeddings(audio, layers="all", aggregation="none")
    assert stacked.shape == (2, 12, t, 768)
    torch.testing.assert_close(stacked[:, 7], all_layers[7])
    concatenated = aves.extract_embeddings(audio, layers=[0, "model.encoder.transformer.layers.5"], aggregation="mean")
    assert concatenated.shape == (2, 2 * 768)
    torch.testing.assert_close(concatenated[:, 768:], all_layers[5].mean(dim=1))
    with pytest.raises(ConfigError, match="CLS"):
        aves.extract_embeddings(audio, aggregation="cls_token")
    with pytest.raises(ConfigError, match="out of range"):
        aves.extract_embeddings(audio, layers=12)


# ------------------------------------------------------------------------------------------ checkpoints
def test_load_safetensors_with_and_without_head(tmp_path):
    torch.manual_seed(1)
    source = rl_core.build_model("aves", num_classes=4).eval()
    path = tmp_path / "aves_head.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    audio = clips(2, 0.5)
    with torch.inference_mode():
        logits = source(audio)
        features = source.forward_features(source.prepare_input(audio))
    assert logits.shape == (2, 4)
    del source  # one 380 MB model at a time
    with_head = rl_core.load_model("birdaves_biox_base", checkpoint_path=path)
    assert with_head.num_classes == 4
    with torch.inference_mode():
        torch.testing.assert_close(with_head(audio), logits)
    del with_head
    without_head = rl_core.load_model("birdaves_biox_base", checkpoint_path=path, return_features_only=True)
    assert without_head.classifier is None
    with torch.inference_mode():
        torch.testing.assert_close(without_head(audio), features)


def test_public_torchaudio_file_as_checkpoint_and_as_pretrained(tmp_path, monkeypatch, aves):
    """The public ``*.torchaudio.pt`` format (bare torchaudio names, weight_norm saved as weight_g / weight_v),
    placed where rl_core caches the BirdAVES URL: usable as checkpoint_path and by pretrained=True, offline."""
    from rl_core.checkpoints import _url_cache_path

    legacy = {}
    for key, value in aves.state_dict().items():
        key = key.removeprefix("model.")
        key = key.replace("conv.parametrizations.weight.original0", "conv.weight_g")
        key = key.replace("conv.parametrizations.weight.original1", "conv.weight_v")
        legacy[key] = value
    assert "encoder.transformer.pos_conv_embed.conv.weight_g" in legacy
    monkeypatch.setenv("RL_CORE_CACHE", str(tmp_path / "cache"))
    path = _url_cache_path(aves_module.BIRDAVES_URLS["base"])
    path.parent.mkdir(parents=True)
    torch.save(legacy, path)
    del legacy
    audio = clips(1, 0.5)
    with torch.inference_mode():
        expected = aves(audio)
    loaded = rl_core.load_model("birdaves_biox_base", checkpoint_path=path)
    assert loaded.num_classes is None
    with torch.inference_mode():
        torch.testing.assert_close(loaded(audio), expected, rtol=0, atol=0)
    del loaded
    pretrained = rl_core.build_model("aves", pretrained=True).eval()
    with torch.inference_mode():
        torch.testing.assert_close(pretrained(audio), expected, rtol=0, atol=0)


def test_checkpoint_of_other_family(tmp_path):
    effnet = rl_core.build_model("efficientnet")
    path = tmp_path / "effnet.safetensors"
    save_file({k: v.contiguous() for k, v in effnet.state_dict().items()}, str(path))
    with pytest.raises(CheckpointMismatchError, match="aves"):
        rl_core.load_model("birdaves_biox_base", checkpoint_path=path)


def test_pretrained_offline_fails_clearly_and_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("RL_CORE_CACHE", str(tmp_path / "cache"))
    # a local port that refuses connections: the real download path runs, nothing leaves the machine
    monkeypatch.setitem(aves_module.BIRDAVES_URLS, "base", "http://127.0.0.1:9/birdaves-biox-base.torchaudio.pt")
    start = time.monotonic()
    with pytest.raises(CheckpointNotAvailableError, match="BirdAVES biox base"):
        rl_core.build_model("aves", pretrained=True)
    assert time.monotonic() - start < 20


# ------------------------------------------------------------------------------------------ bad input
def test_short_clip_is_padded_to_one_frame(aves):
    with torch.inference_mode():
        short = aves.forward_features(aves.prepare_input(torch.zeros(1, 100)))  # padded to 400 samples
    assert short.shape == (1, 1, 768)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="aves_variant"):
        rl_core.build_model("aves", aves_variant="huge")
    spec = rl_core.ModelSpec(name="aves", audio_config=rl_core.AudioConfig(representation="mel_spectrogram"))
    with pytest.raises(ConfigError, match="raw"):
        rl_core.build_model_from_spec(spec)
