"""Bird-MAE: front end, shapes (Base built for real, Huge on the meta device), embeddings and checkpoint loading
rules (the family contract: state-dict names against the fixture, inputs, hooks, bf16, is in
test_model_contract.py)."""

from __future__ import annotations


import pytest
import torch
from safetensors.torch import save_file
from torchaudio.compliance import kaldi

from rl_core.configs import AudioConfig, ModelSpec
from rl_core.errors import CheckpointMismatchError, ConfigError
from rl_core.loading import build_model, build_model_from_spec, load_model
from rl_core.models.birdmae import BirdMAE
from rl_core.registry import get_model_entry

SR = 32000


def chirp(seconds: float, sr: int = SR) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return (0.3 * torch.sin(2 * torch.pi * (1000 + 1500 * t) * t)).unsqueeze(0)


@pytest.fixture(scope="module")
def base() -> BirdMAE:
    torch.manual_seed(0)
    return build_model("birdmae").eval()


# ----------------------------------------------------------------------------------- front end
def test_spectrogram_matches_the_reference_recipe(base):
    """5-s clip, DC removed, torchaudio's Kaldi fbank, padded to 512 frames with the minimum, (x + 7.2) / 8.86."""
    clip = chirp(3.0) + 0.1
    spec = base.spectrogram(clip)
    assert spec.shape == (1, 1, 512, 128)
    padded = torch.nn.functional.pad(clip[0], (0, 5 * SR - clip.shape[-1]))
    padded = padded - padded.mean()
    ref = kaldi.fbank(padded.unsqueeze(0), htk_compat=True, sample_frequency=SR, use_energy=False,
                      window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    assert ref.shape == (498, 128)
    ref = torch.cat([ref, ref.min().expand(512 - 498, 128)])
    ref = (ref + 7.2) / (2 * 4.43)
    assert torch.allclose(spec[0, 0], ref, atol=1e-4)
    # the padding floor is per clip: a clip's input does not depend on its batch-mates
    pair = base.spectrogram(torch.cat([clip, 0.01 * chirp(3.0)]))
    assert torch.equal(pair[:1], spec)
    # longer clips are cut to 5 s
    assert torch.allclose(base.spectrogram(torch.cat([chirp(5.0), chirp(2.0)], dim=1)), base.spectrogram(chirp(5.0)))


# ----------------------------------------------------------------------------------- parameters
def test_huge_variant_shapes_on_meta_device():
    with torch.device("meta"):  # 630 M parameters: check the layout without allocating them
        huge = BirdMAE(birdmae_variant="huge", num_classes=4)
        tokens = huge.model(torch.zeros(2, 1, 512, 128))
    state = huge.state_dict()
    assert huge.get_embedding_dim() == 1280 and len(huge.list_layers()) == 32
    assert state["model.pos_embed"].shape == (1, 257, 1280)
    assert state["model.blocks.31.mlp.fc1.weight"].shape == (5120, 1280)
    assert state["classifier.weight"].shape == (4, 1280)
    assert sum(p.numel() for n, p in huge.named_parameters() if not n.startswith("classifier")) == 630_342_400
    assert tokens.shape == (2, 257, 1280) and huge.pool(tokens).shape == (2, 1280)


def test_arguments_are_checked():
    with pytest.raises(ConfigError, match="birdmae_variant"):
        build_model("birdmae", birdmae_variant="giant")
    with pytest.raises(ConfigError, match="birdmae_varient"):
        build_model("birdmae", birdmae_varient="base")
    with pytest.raises(ConfigError, match="32000 Hz"):
        build_model_from_spec(ModelSpec(name="birdmae", audio_config=AudioConfig(sample_rate=16000)))


# ----------------------------------------------------------------------------------- shapes and embeddings
def test_shapes_and_pooling(base):
    x = torch.cat([chirp(5.0), 0.5 * chirp(5.0).flip(-1)])
    with torch.inference_mode():
        tokens = base.forward_features(base.prepare_input(x))
        pooled = base(x)
    assert tokens.shape == (2, 257, 768)
    assert pooled.shape == (2, 768)
    # the public model's output: mean of the 256 patch tokens, then fc_norm
    assert torch.allclose(pooled, base.model.fc_norm(tokens[:, 1:].mean(1)), atol=1e-5)
    assert base.sample_rate == SR and base.window_samples == 5 * SR
    assert base.list_layers() == [f"layer_{i}" for i in range(12)]


def test_extract_embeddings(base):
    x = chirp(2.0)
    stacked = base.extract_embeddings(x, layers="all", aggregation="none")
    assert stacked.shape == (1, 12, 257, 768)
    cls = base.extract_embeddings(x, layers=-1, aggregation="cls_token")
    assert torch.allclose(cls, stacked[:, -1, 0], atol=1e-5)
    mixed = base.extract_embeddings(x, layers=["layer_2", 5], aggregation="max")
    assert mixed.shape == (1, 1536)
    assert torch.allclose(mixed, torch.cat([stacked[:, 2].amax(1), stacked[:, 5].amax(1)], -1), atol=1e-5)
    with pytest.raises(ConfigError, match="padding_mask"):
        base.extract_embeddings(x, layers=[0, 1], padding_mask=torch.ones(1, 2 * SR, dtype=torch.bool))


# ----------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    torch.manual_seed(5)
    source = build_model("birdmae", num_classes=2)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    folder = tmp_path_factory.mktemp("birdmae_ckpt")
    save_file(state, folder / "avex_style.safetensors")
    # the public model.safetensors layout: bare encoder names, no head
    public = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    save_file(public, folder / "public.safetensors")
    return {"avex": folder / "avex_style.safetensors", "public": folder / "public.safetensors", "state": state}


def test_public_checkpoint_loads_as_embedding_model(checkpoints):
    model = load_model("birdmae_base", checkpoint_path=checkpoints["public"])
    assert model.classifier is None and model.variant == "base"
    assert torch.equal(model.model.blocks[7].attn.qkv.weight, checkpoints["state"]["model.blocks.7.attn.qkv.weight"])
    with torch.inference_mode():
        assert model(chirp(1.0)).shape == (1, 768)


def test_head_rules(checkpoints):
    kept = load_model(ModelSpec(name="birdmae", audio_config=AudioConfig(sample_rate=SR, target_length_seconds=5)),
                      checkpoint_path=checkpoints["avex"])
    assert kept.num_classes == 2
    assert torch.equal(kept.classifier.bias, checkpoints["state"]["classifier.bias"])
    fresh = load_model("birdmae_base", checkpoint_path=checkpoints["avex"], num_classes=6)
    assert fresh.classifier.weight.shape == (6, 768)
    assert torch.equal(fresh.model.cls_token, checkpoints["state"]["model.cls_token"])
    with torch.inference_mode():
        assert kept(chirp(1.0)).shape == (1, 2)


def test_checkpoint_of_another_family_or_variant_is_refused(checkpoints, tmp_path):
    # a Huge-sized table in a Base checkpoint (building Huge itself would cost 2.5 GB)
    wrong = {k[len("model."):]: v for k, v in checkpoints["state"].items() if k.startswith("model.")}
    wrong["pos_embed"] = torch.zeros(1, 257, 1280)
    save_file(wrong, tmp_path / "wrong_variant.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatch for model.pos_embed"):
        load_model("birdmae_base", checkpoint_path=tmp_path / "wrong_variant.safetensors")
    torch.manual_seed(0)
    eat_path = tmp_path / "eat.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("eat").state_dict().items()}, eat_path)
    with pytest.raises(CheckpointMismatchError, match="birdmae"):
        load_model("birdmae_base", checkpoint_path=eat_path)


def test_official_entries():
    for key, dim, variant in (("birdmae_base", 768, "base"), ("birdmae_huge", 1280, "huge")):
        entry = get_model_entry(key)
        assert entry.model_spec.name == "birdmae" and entry.family == "BirdMAE"
        assert entry.model_spec.extra_kwargs == {"birdmae_variant": variant}
        assert entry.sample_rate == SR and entry.window_seconds == 5 and entry.embedding_dim == dim
        assert entry.checkpoint_path.startswith("hf://DBD-research-group/Bird-MAE-")


# ----------------------------------------------------------------------------------- input checks
