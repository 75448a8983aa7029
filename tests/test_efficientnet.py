"""EfficientNet (B0/B1) on log-mel: front end, parameter names of both variants, shapes, embeddings, loading (the
family contract: inputs, hooks, round trip, is in test_model_contract.py)."""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal
import torch
import torchaudio
from safetensors.torch import save_file

import rl_core
from rl_core.errors import CheckpointMismatchError, CheckpointNotAvailableError, ConfigError
from rl_core.models import efficientnet as effnet_module
from rl_core.registry import get_model_entry

FIXTURES = Path(__file__).parent / "fixtures"
SR = 16000
STAGE_CHANNELS = [32, 16, 24, 40, 80, 112, 192, 320, 1280]  # outputs of model.features.0 .. 8 (B0)


def chirps(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    g = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    clips = [0.3 * np.sin(2 * np.pi * (500 + 700 * i) * t + 2 * np.pi * 300 * t**2) + 0.02 * g.standard_normal(t.size)
             for i in range(batch)]
    return torch.from_numpy(np.stack(clips).astype(np.float32))


@pytest.fixture(scope="module")
def b0() -> rl_core.ModelBase:
    torch.manual_seed(0)
    return rl_core.build_model("esp_aves2_effnetb0_all").eval()


def shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------ front end
def reference_log_mel(wave: np.ndarray) -> np.ndarray:
    """Independent computation with numpy + librosa: reflect-padded frames, periodic hann, |rfft|^2,
    HTK mel filterbank without normalisation, log(x + 1e-6), min-max over the whole example."""
    n_fft, hop = 800, 160
    padded = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + (padded.size - n_fft) // hop
    frames = np.stack([padded[i * hop: i * hop + n_fft] for i in range(n_frames)])
    window = scipy.signal.get_window("hann", n_fft, fftbins=True)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (frames, 401)
    fbank = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=128, fmin=0.0, fmax=SR / 2, htk=True, norm=None)
    mel = np.log(fbank @ power.T + 1e-6)  # (128, frames)
    return (mel - mel.min()) / (mel.max() - mel.min() + 1e-8)


def test_front_end_matches_direct_reference(b0):
    audio = chirps(2, 1.0)
    with torch.inference_mode():
        image = b0.spectrogram(b0.prepare_input(audio))
    assert image.shape == (2, 3, 128, 101)
    assert torch.equal(image[:, 0], image[:, 1]) and torch.equal(image[:, 0], image[:, 2])
    for i in range(2):
        expected = reference_log_mel(audio[i].numpy())
        np.testing.assert_allclose(image[i, 0].numpy(), expected, atol=2e-4)
        assert image[i, 0].min().item() == pytest.approx(0.0, abs=1e-6)
        assert image[i, 0].max().item() == pytest.approx(1.0, abs=1e-6)


def test_mel_filterbank_is_avex_melscale():
    """avex applies torchaudio.transforms.MelScale with its defaults (HTK, no norm, 0 Hz .. sr/2)."""
    front = effnet_module.LogMelImage(effnet_module.ESP_EFFICIENTNET_AUDIO)
    melscale = torchaudio.transforms.MelScale(n_mels=128, sample_rate=SR, n_stft=401)
    assert torch.equal(front.mel_fbank, melscale.fb.T)
    assert "mel_fbank" not in front.state_dict() and "window" not in front.state_dict()


def test_front_end_is_per_example_and_on_model_device(b0):
    loud, quiet = chirps(1, 1.0, seed=1), 0.01 * chirps(1, 1.0, seed=2)
    with torch.inference_mode():
        both = b0.spectrogram(torch.cat([loud, quiet]))
        alone = [b0.spectrogram(loud), b0.spectrogram(quiet)]
    # min-max runs per example: a clip's image does not depend on its batch neighbours
    torch.testing.assert_close(both[0], alone[0][0])
    torch.testing.assert_close(both[1], alone[1][0])
    assert both.amin(dim=(1, 2, 3)).tolist() == [0.0, 0.0]
    assert both.amax(dim=(1, 2, 3)).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert both.device == next(b0.parameters()).device == b0.front_end.mel_fbank.device


# ------------------------------------------------------------------------------------------ parameter names
@pytest.mark.parametrize("variant", ["b0", "b1"])
def test_state_dict_names_equal_avex(variant):
    fixture = json.loads((FIXTURES / f"efficientnet_{variant}_state_dict_shapes.json").read_text())
    n = fixture["head_classes"]
    with_head = rl_core.build_model("efficientnet", efficientnet_variant=variant, num_classes=n)
    assert shapes(with_head) == fixture["with_head"]
    # avex keeps torchvision's 1000-class ImageNet layer when it has no head; ours has no head at all
    assert fixture["without_head"]["model.classifier.1.weight"] == [1000, 1280]
    backbone = {k: v for k, v in fixture["without_head"].items() if not k.startswith("model.classifier.")}
    assert shapes(rl_core.build_model("efficientnet", efficientnet_variant=variant)) == backbone


def test_classifier_naming():
    cls = rl_core.get_model_class("efficientnet")
    assert cls.classifier_prefix == "model.classifier."
    head = {"model.classifier.1.weight": torch.zeros(42, 1280), "model.classifier.1.bias": torch.zeros(42)}
    assert cls.num_classes_in_state_dict(head) == 42
    assert cls.num_classes_in_state_dict({"model.features.0.0.weight": torch.zeros(32, 3, 3, 3)}) is None


def test_head_is_not_registered_twice():
    model = rl_core.build_model("efficientnet", num_classes=3)
    assert model.classifier is model.model.classifier
    assert not any(k.startswith("classifier.") for k in model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == 4007548 + 1280 * 3 + 3


# ------------------------------------------------------------------------------------------ shapes
def test_shapes_10_seconds(b0):
    audio = chirps(1, 10.0)
    with torch.inference_mode():
        features = b0.forward_features(b0.prepare_input(audio))
        embedding = b0(audio)
    assert features.shape == (1, 1280, 4, 32)
    assert embedding.shape == (1, 1280)
    torch.testing.assert_close(embedding, features.mean(dim=(2, 3)))
    features_model = rl_core.build_model("esp_aves2_effnetb0_all", return_features_only=True).eval()
    features_model.load_state_dict(b0.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(features_model(audio), features)
    assert b0.get_embedding_dim() == 1280 and b0.sample_rate == SR and b0.window_samples == 160000


def test_logits_shape_and_b1():
    model = rl_core.build_model("efficientnet_b1", num_classes=4).eval()
    with torch.inference_mode():
        logits = model(chirps(2, 1.0))
    assert logits.shape == (2, 4)
    assert model.variant == "b1" and len(model.model.features) == 9


# ------------------------------------------------------------------------------------------ embeddings
def test_layers_listed(b0):
    assert b0.list_layers() == [f"model.features.{i}" for i in range(9)]
    assert rl_core.list_model_layers("esp_aves2_effnetb0_bio") == b0.list_layers()


def test_extract_embeddings_layer_selection(b0):
    audio = chirps(2, 1.0)
    last = b0.extract_embeddings(audio)  # last_layer, mean
    with torch.inference_mode():
        pooled = b0(audio)
    torch.testing.assert_close(last, pooled)
    by_name = b0.extract_embeddings(audio, layers="model.features.8")
    by_negative = b0.extract_embeddings(audio, layers=-1)
    torch.testing.assert_close(by_name, last)
    torch.testing.assert_close(by_negative, last)
    third = b0.extract_embeddings(audio, layers=3, aggregation="max")
    assert third.shape == (2, STAGE_CHANNELS[3])
    everything = b0.extract_embeddings(audio, layers="all")
    assert everything.shape == (2, sum(STAGE_CHANNELS))
    torch.testing.assert_close(everything[:, -1280:], last)
    two = b0.extract_embeddings(audio, layers=["model.features.2", -2], aggregation="mean")
    assert two.shape == (2, STAGE_CHANNELS[2] + STAGE_CHANNELS[-2])


def test_extract_embeddings_aggregation(b0):
    audio = chirps(1, 1.0)
    tokens = b0.extract_embeddings(audio, layers=-1, aggregation="none")
    # a (1, 1280, 4, 4) map becomes 16 tokens of 1280
    assert tokens.shape == (1, 16, 1280)
    torch.testing.assert_close(b0.extract_embeddings(audio, layers=-1, aggregation="max"), tokens.amax(dim=1))
    torch.testing.assert_close(b0.extract_embeddings(audio, layers=-1, aggregation="mean"), tokens.mean(dim=1))
    with pytest.raises(ConfigError, match="CLS"):
        b0.extract_embeddings(audio, aggregation="cls_token")
    with pytest.raises(ConfigError, match="unknown layer"):
        b0.extract_embeddings(audio, layers="model.features.99")
    with pytest.raises(ConfigError, match="out of range"):
        b0.extract_embeddings(audio, layers=9)


# ------------------------------------------------------------------------------------------ loading
def write_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(0.5 + torch.rand(t.shape, generator=g) if name.endswith("running_var")
                        else 0.05 * torch.randn(t.shape, generator=g) + (1.0 if t.ndim == 1 and name.endswith("weight") else 0.0))
    return model.eval()


def test_load_model_with_head_and_class_mapping(tmp_path):
    source = randomised(rl_core.build_model("efficientnet", num_classes=3), seed=1)
    ckpt = write_checkpoint(source, tmp_path / "head.safetensors")
    labels = {"Parus major": 0, "Hydrobates pelagicus": 1, "Taeniopygia guttata": 2}
    (tmp_path / "label_map.json").write_text(json.dumps(labels))
    entry = get_model_entry("esp_aves2_effnetb0_all").model_copy(
        update={"class_mapping_path": str(tmp_path / "label_map.json")})
    model = rl_core.load_model(entry, checkpoint_path=ckpt, device="cpu")
    assert model.num_classes == 3 and not model.training
    assert model.class_labels == ["Parus major", "Hydrobates pelagicus", "Taeniopygia guttata"]
    audio = chirps(2, 1.0)
    with torch.inference_mode():
        torch.testing.assert_close(model(audio), source(audio))
    # explicit num_classes: new random head, backbone weights from the checkpoint
    fresh = rl_core.load_model(entry, checkpoint_path=ckpt, num_classes=5)
    assert fresh.num_classes == 5
    torch.testing.assert_close(fresh.model.features[0][0].weight, source.model.features[0][0].weight)
    # features only: the head is stripped
    features = rl_core.load_model(entry, checkpoint_path=ckpt, return_features_only=True)
    assert features.classifier is None
    with torch.inference_mode():
        torch.testing.assert_close(features(audio), source.forward_features(source.prepare_input(audio)))


def test_load_model_without_head(tmp_path):
    source = randomised(rl_core.build_model("efficientnet", efficientnet_variant="b1"), seed=2)
    ckpt = write_checkpoint(source, tmp_path / "backbone.safetensors")
    model = rl_core.load_model("efficientnet_b1", checkpoint_path=ckpt)
    assert model.num_classes is None and model.classifier is None
    audio = chirps(1, 1.0)
    with torch.inference_mode():
        torch.testing.assert_close(model(audio), source(audio))


def test_checkpoint_of_other_family_or_variant(tmp_path):
    # avex's AVES parameter names (tiny tensors: the names alone make it another family's checkpoint)
    aves_names = json.loads((FIXTURES / "aves_state_dict_shapes.json").read_text())["without_head"]
    ckpt = tmp_path / "aves.safetensors"
    save_file({name: torch.zeros(1) for name in aves_names}, str(ckpt))
    with pytest.raises(CheckpointMismatchError, match="efficientnet"):
        rl_core.load_model("esp_aves2_effnetb0_audioset", checkpoint_path=ckpt)
    b1 = write_checkpoint(rl_core.build_model("efficientnet_b1"), tmp_path / "b1.safetensors")
    with pytest.raises(CheckpointMismatchError, match="shape mismatch|missing|unexpected"):
        rl_core.load_model("esp_aves2_effnetb0_audioset", checkpoint_path=b1)


# ------------------------------------------------------------------------------------------ pretrained
def test_pretrained_uses_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    _, weights = effnet_module.VARIANTS["b0"]
    cached = tmp_path / "hub" / "checkpoints" / Path(weights.url).name
    cached.parent.mkdir(parents=True)
    import torchvision

    imagenet_like = randomised(torchvision.models.efficientnet_b0(weights=None), seed=3)
    torch.save(imagenet_like.state_dict(), cached)
    model = rl_core.build_model("efficientnet", pretrained=True)
    assert torch.equal(model.model.features[3][0].block[0][0].weight, imagenet_like.features[3][0].block[0][0].weight)
    assert model.classifier is None


def test_pretrained_offline_fails_clearly_and_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setenv("RL_CORE_CACHE", str(tmp_path / "cache"))
    # a local port that refuses connections: the real download path runs, nothing leaves the machine
    unreachable = types.SimpleNamespace(url="http://127.0.0.1:9/efficientnet_b0_rwightman-7f5810bc.pth")
    monkeypatch.setitem(effnet_module.VARIANTS, "b0", (effnet_module.VARIANTS["b0"][0], unreachable))
    start = time.monotonic()
    with pytest.raises(CheckpointNotAvailableError, match="ImageNet weights.*pretrained=False"):
        rl_core.build_model("efficientnet", pretrained=True)
    assert time.monotonic() - start < 20


# ------------------------------------------------------------------------------------------ bad input
def test_short_clip_is_padded_to_one_stft_window(b0):
    with torch.inference_mode():
        short = b0.forward_features(b0.prepare_input(chirps(1, 0.005)))  # 80 samples: padded to one window
    assert short.shape == (1, 1280, 4, 1)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="efficientnet_variant"):
        rl_core.build_model("efficientnet", efficientnet_variant="b7")
    with pytest.raises(ConfigError, match="mel spectrogram"):
        rl_core.build_model_from_spec(rl_core.ModelSpec(name="efficientnet",
                                                        audio_config=rl_core.AudioConfig(representation="raw")))


def test_audio_config_fields_override_the_esp_front_end():
    # only the sample rate given: the other fields keep the ESP values (not AudioConfig's generic defaults)
    model = rl_core.build_model_from_spec(rl_core.ModelSpec(name="efficientnet",
                                                            audio_config=rl_core.AudioConfig(sample_rate=32000)))
    assert model.sample_rate == 32000 and model.audio_config.n_fft == 800
    assert model.audio_config.representation == "mel_spectrogram"
    # the framework README's example front end (n_fft 2048, hop 512): 5 s gives a 4 x 5 map
    readme = rl_core.AudioConfig(representation="mel_spectrogram", n_fft=2048, hop_length=512, win_length=2048)
    model = rl_core.build_model_from_spec(rl_core.ModelSpec(name="efficientnet", audio_config=readme),
                                          num_classes=10, return_features_only=True).eval()
    with torch.inference_mode():
        assert model(chirps(1, 5.0)).shape == (1, 1280, 4, 5)
