"""BEATs: front end, checkpoint layout of each variant, shapes, embeddings and loading rules (the family contract:
inputs, hooks, bf16, round trip, is in test_model_contract.py).

Kept fast: short clips, batch <= 2, models built once per module. Parity with avex's module itself is
checked by bench/peer/parity_beats.py (needs the avex venv); here the fixture of avex's state_dict names and shapes
stands in for it. The fixture is regenerated with ``/work/avex-venv/bin/python -m tests.fixtures.make_beats_fixture``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torchaudio.compliance import kaldi

import rl_core
from rl_core import ModelSpec
from rl_core.errors import CheckpointMismatchError, ConfigError
from rl_core.models.beats import BEATs, beats_fbank, relative_position_buckets

FIXTURE = Path(__file__).parent / "fixtures" / "beats_state_dict_shapes.json"
SR = 16000


def audio(batch: int, seconds: float, seed: int = 0, sr: int = SR) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * sr)
    t = torch.arange(n) / sr
    return 0.2 * torch.sin(2 * torch.pi * 1500 * t) + 0.1 * torch.randn(batch, n, generator=g)


def save_state_dict(model: torch.nn.Module, path: Path) -> Path:
    # clone: the position table is shared between layers and safetensors refuses aliased tensors
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def encoder() -> BEATs:
    torch.manual_seed(0)
    return rl_core.build_model("beats").eval()


@pytest.fixture(scope="module")
def fine_tuned_with_head() -> BEATs:
    torch.manual_seed(1)
    return rl_core.build_model("beats", fine_tuned=True, num_classes=5).eval()


# ------------------------------------------------------------------------------------------------ front end
@pytest.mark.parametrize("samples", [2 * SR, 2 * SR + 123])
def test_batched_fbank_equals_kaldi_per_clip(samples):
    x = audio(2, samples / SR, seed=3)[:, :samples] * 32768.0
    batched = beats_fbank()(x)
    for i in range(2):
        ref = kaldi.fbank(x[i : i + 1], num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10)
        assert batched[i].shape == ref.shape == (1 + (samples - 400) // 160, 128)
        torch.testing.assert_close(batched[i], ref, atol=1e-4, rtol=0)


def test_fbank_quiet_input_hits_kaldi_floor():
    x = torch.zeros(1, SR)
    x[0, 8000:] = 1e-3 * torch.randn(8000)  # half digital silence: energies below float32 eps
    ref = kaldi.fbank(x * 32768.0, num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10)
    torch.testing.assert_close(beats_fbank()(x * 32768.0)[0], ref, atol=1e-4, rtol=0)


def test_relative_position_buckets_are_t5_buckets():
    buckets = relative_position_buckets(1000, 320, 800, torch.device("cpu"))
    assert buckets[0, 0] == 0 and buckets[0, 1] == 161 and buckets[1, 0] == 1
    assert buckets[0, 79] == 160 + 79 and buckets[0, 999] == 319 and buckets[999, 0] == 159
    assert int(buckets.min()) == 0 and int(buckets.max()) == 319


# ------------------------------------------------------------------------------------------------ checkpoint layout
@pytest.mark.parametrize(
    "variant, kwargs",
    [
        ("encoder", {}),
        ("naturelm", {"fine_tuned": True, "use_naturelm": True}),
        ("fine_tuned_head", {"fine_tuned": True, "num_classes": 7}),
    ],
)
def test_state_dict_names_and_shapes_equal_avex_module(variant, kwargs):
    expected = json.loads(FIXTURE.read_text())[variant]
    assert expected["num_classes"] == kwargs.get("num_classes")
    model = rl_core.build_model("beats", **kwargs)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == expected["shapes"]
    assert list(ours) == list(expected["shapes"])  # same order too


def test_official_yamls_build_the_checkpoint_variants():
    expected = {
        "esp_aves2_sed_birdcode_beats_encoder": {},
        "beats_iter3_plus_as2m": {},
        "esp_aves2_naturelm_audio_v1_beats": {"fine_tuned": True, "use_naturelm": True},
        "esp_aves2_sl_beats_all": {"fine_tuned": True},
        "esp_aves2_sl_beats_bio": {"fine_tuned": True},
    }
    for key, kwargs in expected.items():
        spec = rl_core.get_model_spec(key)
        assert spec.name == "beats" and spec.extra_kwargs == kwargs, key
    cfg = rl_core.get_model_spec("esp_aves2_sed_birdcode_beats_encoder").audio_config
    assert (cfg.sample_rate, cfg.target_length_seconds) == (32000, 5.0)
    # one built end to end: the SL backbone is the fine-tuned layout (the head comes from the checkpoint)
    shapes = json.loads(FIXTURE.read_text())["naturelm"]["shapes"]
    model = rl_core.build_model("esp_aves2_sl_beats_all")
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == shapes


# ------------------------------------------------------------------------------------------------ shapes
def test_feature_and_embedding_shapes(encoder):
    with torch.inference_mode():
        assert rl_core.build_model("beats", return_features_only=True).eval()(audio(1, 10.0)).shape == (1, 496, 768)
        assert encoder.forward_features(encoder.prepare_input(audio(1, 5.0))).shape == (1, 248, 768)
        embedding = encoder(audio(2, 0.5))
    assert embedding.shape == (2, 768) and embedding.dtype == torch.float32
    assert encoder.get_embedding_dim() == 768 and encoder.classifier is None


def test_logits_shape_and_head(fine_tuned_with_head):
    with torch.inference_mode():
        logits = fine_tuned_with_head(audio(2, 0.5))
    assert logits.shape == (2, 5)
    assert torch.allclose(fine_tuned_with_head.scores(logits).sum(-1), torch.ones(2))


def test_birdcode_encoder_takes_5s_at_32khz_to_496_tokens():
    model = rl_core.build_model("esp_aves2_sed_birdcode_beats_encoder", return_features_only=True).eval()
    assert model.sample_rate == 32000 and model.window_samples == 160000
    with torch.inference_mode():
        assert model(audio(1, 5.0, sr=32000)).shape == (1, 496, 768)


# ------------------------------------------------------------------------------------------------ embeddings
def test_layers_listed():
    layers = rl_core.list_model_layers("esp_aves2_naturelm_audio_v1_beats")
    assert layers == ["patch_embed"] + [f"layer_{i}" for i in range(12)]


def test_extract_embeddings_selectors_and_aggregations(encoder):
    x = audio(1, 0.5)
    with torch.inference_mode():
        features = encoder.forward_features(encoder.prepare_input(x))
    tokens = features.shape[1]
    last = encoder.extract_embeddings(x, layers="last_layer", aggregation="none")
    torch.testing.assert_close(last, features)  # post-LN: the last layer's output is the model's output
    torch.testing.assert_close(encoder.extract_embeddings(x, layers=-1, aggregation="mean"), features.mean(1))
    torch.testing.assert_close(encoder.extract_embeddings(x, layers="layer_11", aggregation="max"), features.amax(1))
    by_name = encoder.extract_embeddings(x, layers=["layer_3", "patch_embed"], aggregation="mean")
    by_index = encoder.extract_embeddings(x, layers=[4, 0], aggregation="mean")
    by_negative = encoder.extract_embeddings(x, layers=[-9, -13], aggregation="mean")
    assert by_name.shape == (1, 2 * 768)
    torch.testing.assert_close(by_name, by_index)
    torch.testing.assert_close(by_name, by_negative)
    assert not torch.allclose(by_name[:, :768], by_name[:, 768:])
    stacked = encoder.extract_embeddings(x, layers="all", aggregation="none")
    assert stacked.shape == (1, 13, tokens, 768)
    torch.testing.assert_close(stacked[:, -1], features)
    assert encoder.extract_embeddings(x, layers="all", aggregation="max").shape == (1, 13 * 768)


def test_extract_embeddings_errors(encoder):
    x = audio(1, 0.5)
    with pytest.raises(ConfigError, match="no CLS token"):
        encoder.extract_embeddings(x, layers="layer_2", aggregation="cls_token")
    with pytest.raises(ConfigError, match="out of range"):
        encoder.extract_embeddings(x, layers=13)
    with pytest.raises(ConfigError, match="unknown layer 'layer_12'"):
        encoder.extract_embeddings(x, layers="layer_12")
    # a failure inside the forward pass (a padding mask that fits no clip), with hooks registered
    with pytest.raises(ConfigError, match="padding_mask"):
        encoder.extract_embeddings(x, layers=["layer_0", "layer_5"], padding_mask=torch.zeros(3, 10, dtype=torch.bool))


# ------------------------------------------------------------------------------------------------ loading
def test_checkpoint_with_head_sets_num_classes_and_keeps_weights(tmp_path, fine_tuned_with_head):
    path = save_state_dict(fine_tuned_with_head, tmp_path / "beats_head.safetensors")
    spec = ModelSpec(name="beats", fine_tuned=True)
    x = audio(1, 0.5)
    loaded = rl_core.load_model(spec, checkpoint_path=path, device="cpu")
    assert loaded.num_classes == 5 and not loaded.pretrained
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), fine_tuned_with_head(x))
    # explicit num_classes: new random head, backbone still loaded
    fresh = rl_core.load_model(spec, checkpoint_path=path, num_classes=3, device="cpu")
    assert fresh.classifier.weight.shape == (3, 768)
    torch.testing.assert_close(fresh.backbone.state_dict(), fine_tuned_with_head.backbone.state_dict())
    # features only: no head even though the file has one
    features = rl_core.load_model(spec, checkpoint_path=path, return_features_only=True, device="cpu")
    assert features.classifier is None and features.num_classes is None
    with torch.inference_mode():
        torch.testing.assert_close(features(x), fine_tuned_with_head.forward_features(x))


def test_checkpoint_without_head_gives_embedding_model(tmp_path):
    torch.manual_seed(2)
    source = rl_core.build_model("beats", fine_tuned=True, use_naturelm=True).eval()
    path = save_state_dict(source, tmp_path / "naturelm.safetensors")
    loaded = rl_core.load_model("esp_aves2_naturelm_audio_v1_beats", checkpoint_path=path, device="cpu")
    assert loaded.num_classes is None and loaded.classifier is None and loaded.use_naturelm
    x = 3.0 * audio(1, 0.5)  # beyond [-1, 1]: NatureLM clips
    with torch.inference_mode():
        out = loaded(x)
        torch.testing.assert_close(out, source(x))
        torch.testing.assert_close(out, source(x.clamp(-1, 1)))
    assert out.shape == (1, 768)


def test_microsoft_checkpoint_layout_is_converted(tmp_path, encoder):
    """Original BEATs .pt: {'cfg', 'model'}, no backbone prefix, weight_g/weight_v, no fbank buffers."""
    original = {}
    for key, value in encoder.state_dict().items():
        key = key.removeprefix("backbone.")
        if key.startswith("fbank."):
            continue
        key = key.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v")
        original[key] = value.clone()
    path = tmp_path / "BEATs_iter3_plus_AS2M.pt"
    torch.save({"cfg": {"encoder_layers": 12, "deep_norm": True, "finetuned_model": False}, "model": original}, path)
    loaded = rl_core.load_model("beats_iter3_plus_as2m", checkpoint_path=path, device="cpu")
    x = audio(1, 0.5)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), encoder(x))


def test_checkpoint_of_another_family_is_refused_naming_keys(tmp_path):
    path = tmp_path / "effnet.safetensors"
    save_file({"features.0.0.weight": torch.randn(32, 3, 3, 3), "classifier.1.weight": torch.randn(10, 1280)},
              str(path))
    with pytest.raises(CheckpointMismatchError, match=r"missing keys backbone\..*unexpected keys.*features\.0\.0\.weight"):
        rl_core.load_model("esp_aves2_sed_birdcode_beats_encoder", checkpoint_path=path, device="cpu")


def test_fine_tuned_checkpoint_into_plain_encoder_names_predictor(tmp_path, fine_tuned_with_head):
    path = save_state_dict(fine_tuned_with_head, tmp_path / "ft.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys backbone\.predictor\.bias"):
        rl_core.load_model("beats_iter3_plus_as2m", checkpoint_path=path, device="cpu")


# ------------------------------------------------------------------------------------------------ inputs
def test_short_clip_is_zero_padded_to_one_patch(encoder):
    assert encoder.min_input_samples == 2800  # 400 + 15 * 160 samples: one 16-frame patch
    short = audio(1, 0.05)  # 800 samples
    with torch.inference_mode():
        features = encoder.forward_features(encoder.prepare_input(short))
        padded = torch.nn.functional.pad(short, (0, 2800 - short.shape[1]))
        torch.testing.assert_close(features, encoder.forward_features(padded))
    assert features.shape == (1, 8, 768)


def test_padding_mask_pools_only_real_tokens(fine_tuned_with_head):
    x = audio(2, 0.5)
    mask = torch.zeros_like(x, dtype=torch.bool)
    with torch.inference_mode():
        torch.testing.assert_close(fine_tuned_with_head(x, mask), fine_tuned_with_head(x))
        mask[1, 4000:] = True
        masked = fine_tuned_with_head(x, mask)
        torch.testing.assert_close(masked[0], fine_tuned_with_head(x)[0])
        assert not torch.allclose(masked[1], fine_tuned_with_head(x)[1])


# ------------------------------------------------------------------------------------------------ options
def test_numpy_seed_independent_output(encoder):
    # inference never draws random numbers (no layer drop, no dropout, no dither)
    x = audio(1, 0.5)
    with torch.inference_mode():
        np.random.seed(0)
        a = encoder(x)
        np.random.seed(1)
        torch.manual_seed(5)
        b = encoder(x)
    assert torch.equal(a, b)
