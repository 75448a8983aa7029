"""EAT: Kaldi fbank equality, shapes, embeddings, checkpoint loading rules (the family contract: state-dict names
against the fixture, inputs, hooks, bf16, is in test_model_contract.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torchaudio.compliance import kaldi

from rl_core.configs import AudioConfig, ModelSpec
from rl_core.errors import CheckpointMismatchError, ConfigError
from rl_core.kaldi_fbank import KaldiFbank
from rl_core.loading import build_model, build_model_from_spec, load_model
from rl_core.registry import get_model_entry

SR = 16000


def tone(seconds: float, freq: float = 2000.0, sr: int = SR) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return (0.3 * torch.sin(2 * torch.pi * freq * t)).unsqueeze(0)


@pytest.fixture(scope="module")
def eat() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("eat").eval()


# ----------------------------------------------------------------------------------- front end
@pytest.mark.parametrize("sr", [16000, 32000])
def test_batched_fbank_equals_torchaudio(sr):
    torch.manual_seed(1)
    t = torch.arange(sr) / sr
    batch = torch.stack([0.1 * torch.randn(sr) + 0.02, 0.3 * torch.sin(2 * torch.pi * 1234.5 * t)])
    ours = KaldiFbank(sr, 128, window_type="hanning")(batch)
    reference = torch.stack([
        kaldi.fbank(clip.unsqueeze(0), htk_compat=True, sample_frequency=sr, use_energy=False,
                    window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
        for clip in batch
    ])
    assert ours.shape == reference.shape == (2, 98, 128)
    assert torch.allclose(ours, reference, atol=1e-4, rtol=0)


def test_fbank_povey_window_and_too_short_input():
    x = torch.randn(1, 4000) * 0.1
    ours = KaldiFbank(SR, 80)(x)  # Kaldi defaults: povey window, 23 bins would also work
    reference = kaldi.fbank(x, num_mel_bins=80, dither=0.0, sample_frequency=SR)
    assert torch.allclose(ours[0], reference, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="at least 400 samples"):
        KaldiFbank(SR)(torch.zeros(1, 399))


def test_spectrogram_pads_with_zeros_before_normalising():
    model = build_model("eat", eat_norm_mean=-5.553, eat_norm_std=4.606)
    spec = model.spectrogram(tone(5.0))
    assert spec.shape == (1, 1, 1024, 128)
    frames = 1 + (5 * SR - 400) // 160  # 498 real frames
    padded = spec[0, 0, frames:]
    assert torch.allclose(padded, torch.full_like(padded, 5.553 / (2 * 4.606)))
    assert not torch.allclose(spec[0, 0, frames - 1], padded[0])
    # DC removal: adding an offset to the clip changes nothing
    assert torch.allclose(model.spectrogram(tone(5.0) + 0.25), spec, atol=1e-3)


# ----------------------------------------------------------------------------------- parameters
def test_layers_are_the_twelve_blocks(eat):
    assert eat.list_layers() == [f"layer_{i}" for i in range(12)]
    assert eat.layer_modules()["layer_3"] is eat.encoder.blocks[3]
    assert eat.get_embedding_dim() == 768 and eat.has_cls_token


def test_unknown_or_bad_arguments_are_errors():
    with pytest.raises(ConfigError, match="eat_norm_meen"):
        build_model("eat", eat_norm_meen=1.0)
    with pytest.raises(ConfigError, match="16000 Hz"):
        build_model_from_spec(ModelSpec(name="eat", audio_config=AudioConfig(sample_rate=32000)))
    with pytest.raises(ConfigError, match="checkpoint_path"):
        build_model("eat", pretrained=True)


# ----------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("seconds,batch", [(10.0, 2), (5.0, 1)])
def test_features_shape_cls_first(eat, seconds, batch):
    x = torch.cat([tone(seconds), tone(seconds, 500.0)])[:batch]
    with torch.inference_mode():
        features = eat.forward_features(eat.prepare_input(x))
    assert features.shape == (batch, 513, 768)  # 5 s is padded to 1024 frames too
    assert torch.isfinite(features).all()
    assert torch.equal(eat.pool(features), features[:, 0])  # the embedding is the CLS token
    if batch == 2:
        assert not torch.allclose(features[0], features[1])


# ----------------------------------------------------------------------------------- embeddings
def test_extract_embeddings_layers_and_aggregations(eat):
    x = tone(1.0)
    stacked = eat.extract_embeddings(x, layers="all", aggregation="none")
    assert stacked.shape == (1, 12, 513, 768)
    assert not torch.allclose(stacked[:, 0], stacked[:, 1])
    last = eat.extract_embeddings(x, layers="last_layer", aggregation="none")
    assert last.shape == (1, 513, 768)
    assert torch.allclose(last, stacked[:, -1], atol=1e-5)
    by_index = eat.extract_embeddings(x, layers=[0, -1], aggregation="mean")
    assert by_index.shape == (1, 2 * 768)  # concatenated
    assert torch.allclose(by_index, torch.cat([stacked[:, 0].mean(1), stacked[:, -1].mean(1)], -1), atol=1e-5)
    named = eat.extract_embeddings(x, layers=["layer_4"], aggregation="max")
    assert torch.allclose(named, stacked[:, 4].amax(dim=1), atol=1e-5)
    cls = eat.extract_embeddings(x, layers=-2, aggregation="cls_token")
    assert torch.allclose(cls, stacked[:, 10, 0], atol=1e-5)
    with pytest.raises(ConfigError, match="out of range"):
        eat.extract_embeddings(x, layers=12)
    with pytest.raises(ConfigError, match="unknown layer"):
        eat.extract_embeddings(x, layers="layer_12")


# ----------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """An avex/ESP-style checkpoint with a 3-class head, and the same backbone in the public HF layout."""
    torch.manual_seed(3)
    source = build_model("eat", num_classes=3)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    folder = tmp_path_factory.mktemp("eat_ckpt")
    save_file(state, folder / "esp_style.safetensors")
    hf_state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    save_file(hf_state, folder / "hf_style.safetensors")
    return {"esp": folder / "esp_style.safetensors", "hf": folder / "hf_style.safetensors", "state": state}


def test_checkpoint_with_head_keeps_its_classifier(checkpoints):
    model = load_model("esp_aves2_eat_all", checkpoint_path=checkpoints["esp"], device="cpu")
    assert model.num_classes == 3 and not model.pretrained
    assert torch.equal(model.classifier.weight, checkpoints["state"]["classifier.weight"])
    assert model.norm_mean == -5.553 and model.norm_std == 4.606  # from the ESP YAML
    with torch.inference_mode():
        logits = model(tone(1.0))
        features = model.forward_features(model.prepare_input(tone(1.0)))
        assert torch.allclose(logits, model.classifier(features[:, 0]), atol=1e-5)
    assert logits.shape == (1, 3)


def test_explicit_num_classes_gets_a_new_head_and_the_backbone(checkpoints):
    model = load_model(ModelSpec(name="eat"), checkpoint_path=checkpoints["esp"], num_classes=5)
    assert model.classifier.weight.shape == (5, 768)
    key = "backbone.model.blocks.4.mlp.fc1.weight"
    assert torch.equal(model.state_dict()[key], checkpoints["state"][key])


def test_public_hf_layout_loads_as_embedding_model(checkpoints):
    model = load_model(ModelSpec(name="eat"), checkpoint_path=checkpoints["hf"])
    assert model.num_classes is None and model.classifier is None
    key = "backbone.model.fixed_positional_encoder.positions"
    assert torch.equal(model.state_dict()[key], checkpoints["state"][key])
    features = load_model(ModelSpec(name="eat"), checkpoint_path=checkpoints["esp"], return_features_only=True)
    assert features.classifier is None
    with torch.inference_mode():
        assert features(tone(1.0)).shape == (1, 513, 768)
        assert torch.allclose(model(tone(1.0)), features(tone(1.0))[:, 0], atol=1e-5)


def test_position_table_of_another_length_is_fitted(eat):
    key = "backbone.model.fixed_positional_encoder.positions"
    longer = torch.randn(1, 1024 * 8, 768)
    fitted = eat.convert_state_dict({key: longer})[key]
    assert fitted.shape == (1, 768 * 8, 768) and torch.equal(fitted, longer[:, : 768 * 8])
    shorter = torch.randn(1, 512, 768)  # exactly the rows a 1024-frame input uses
    fitted = eat.convert_state_dict({"model.fixed_positional_encoder.positions": shorter})[key]
    assert torch.equal(fitted[:, :512], shorter)
    assert torch.equal(fitted[:, 512:], eat.encoder.fixed_positional_encoder.positions[:, 512:])
    too_short = torch.randn(1, 256, 768)
    assert eat.convert_state_dict({key: too_short})[key] is too_short  # left to the strict check


def test_checkpoint_of_another_family_is_refused(tmp_path):
    torch.manual_seed(0)
    birdmae = build_model("birdmae")
    path = tmp_path / "birdmae.safetensors"
    save_file({k: v.contiguous() for k, v in birdmae.state_dict().items()}, path)
    with pytest.raises(CheckpointMismatchError, match="missing keys"):
        load_model(ModelSpec(name="eat"), checkpoint_path=path)


def test_official_entries():
    for key in ("esp_aves2_eat_all", "esp_aves2_eat_bio", "esp_aves2_sl_eat_all_ssl_all",
                "esp_aves2_sl_eat_bio_ssl_all", "eat_base_epoch30_pretrain"):
        entry = get_model_entry(key)
        assert entry.model_spec.name == "eat" and entry.family == "EAT"
        assert entry.sample_rate == 16000 and entry.window_seconds == 10 and entry.embedding_dim == 768
        assert entry.checkpoint_path.startswith("hf://") and entry.source_url.startswith("https://huggingface.co/")
    sl = get_model_entry("esp_aves2_sl_eat_bio_ssl_all")
    assert sl.class_mapping_path == "hf://EarthSpeciesProject/esp-aves2-sl-eat-bio-ssl-all/label_map.json"
    assert get_model_entry("esp_aves2_eat_all").class_mapping_path is None
    assert get_model_entry("eat_base_epoch30_pretrain").model_spec.extra_kwargs["eat_norm_mean"] == -4.268


# ----------------------------------------------------------------------------------- input checks
