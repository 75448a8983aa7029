"""Helpers shared by the BEATs scripts that need the peer package avex (run them with avex's Python).

Builds avex's BEATs wrapper (the module the ESP safetensors were written from) from avex's own packaged YAMLs,
so that names, shapes and architecture flags are exactly those of the published checkpoints.
"""

from __future__ import annotations

import importlib.resources

import yaml

#: fixture variant -> (avex official YAML, num_classes of the head built for the comparison)
VARIANTS = {
    "encoder": ("esp_aves2_sed_birdcode_beats_encoder", None),
    "naturelm": ("esp_aves2_naturelm_audio_v1_beats", None),
    "fine_tuned_head": ("esp_aves2_sl_beats_all", 7),
}


def avex_model_spec(yaml_key: str) -> dict:
    text = importlib.resources.files("avex.api.configs.official_models").joinpath(f"{yaml_key}.yml").read_text()
    return yaml.safe_load(text)["model_spec"]


def build_avex_beats(yaml_key: str, num_classes: int | None, seed: int = 0):
    """avex's BEATs wrapper with seeded random weights, in eval mode, on the CPU."""
    import torch
    from avex.models.beats_model import Model

    spec = avex_model_spec(yaml_key)
    torch.manual_seed(seed)
    model = Model(
        num_classes=num_classes,
        pretrained=False,
        device="cpu",
        return_features_only=num_classes is None,
        use_naturelm=bool(spec.get("use_naturelm", False)),
        fine_tuned=bool(spec.get("fine_tuned", False)),
        init_config=spec["init_config"],
    )
    with torch.no_grad():  # the default init leaves biases at 0 and grep_a at 1: randomise everything
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return model.eval()
