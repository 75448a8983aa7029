"""AVES / BirdAVES: HuBERT-style transformer encoders on raw 16 kHz audio (Earth Species Project).

The network is torchaudio's ``wav2vec2_model`` built from the published configuration (the same
module tree the ESP ports use), held as ``self.model`` so its state_dict names are ``model.*`` like the
peer package avex's. A convolutional feature extractor turns 320 samples into one frame (49 per
second), then 12 (base) or 24 (large) transformer layers give (B, frames, 768 | 1024) features.

The features are the output of the last transformer layer, without the encoder's closing LayerNorm
(torchaudio's ``extract_features``, which avex and the AVES package return).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Literal

import torch
from torch import nn
from torchaudio.models import wav2vec2_model

from rl_core.checkpoints import load_state_dict, resolve_checkpoint
from rl_core.errors import ConfigError
from rl_core.models.base import ModelBase
from rl_core.registry import register_model_class

log = logging.getLogger(__name__)

# Published torchaudio configs (earthspecies/aves, ``*.torchaudio.model_config.json``). AVES base and
# BirdAVES biox base share the HuBERT-base shape; BirdAVES biox/bioxn large share the large one.
_COMMON = {
    "extractor_mode": "group_norm",
    "extractor_conv_layer_config": [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2,
    "extractor_conv_bias": False,
    "encoder_projection_dropout": 0.1,
    "encoder_pos_conv_kernel": 128,
    "encoder_pos_conv_groups": 16,
    "encoder_attention_dropout": 0.1,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.1,
    "encoder_layer_norm_first": False,
    "encoder_layer_drop": 0.05,
}
AVES_CONFIGS: dict[str, dict] = {
    "base": {**_COMMON, "encoder_embed_dim": 768, "encoder_num_layers": 12, "encoder_num_heads": 12,
             "encoder_ff_interm_features": 3072},
    "large": {**_COMMON, "encoder_embed_dim": 1024, "encoder_num_layers": 24, "encoder_num_heads": 16,
              "encoder_ff_interm_features": 4096},
}

#: weights loaded by ``pretrained=True`` (public, CC BY-NC-SA 4.0)
BIRDAVES_URLS = {
    "base": "https://storage.googleapis.com/esp-public-files/birdaves/birdaves-biox-base.torchaudio.pt",
    "large": "https://storage.googleapis.com/esp-public-files/birdaves/birdaves-biox-large.torchaudio.pt",
}

_PREFIX = "model."
# Checkpoints saved before torch's parametrized weight_norm name the positional conv's weights so.
_OLD_WEIGHT_NORM = {
    "pos_conv_embed.conv.weight_g": "pos_conv_embed.conv.parametrizations.weight.original0",
    "pos_conv_embed.conv.weight_v": "pos_conv_embed.conv.parametrizations.weight.original1",
}


@register_model_class
class Aves(ModelBase):
    """AVES / BirdAVES encoder on raw waveforms; optional linear head on the mean-pooled frames.

    ``precision="bfloat16"`` stores the transformer's Linear weights in bf16 and runs the whole network (the
    convolutional feature extractor too) under autocast; any head stays float32 (ModelBase._set_precision).
    """

    name = "aves"
    cpu_micro_batch_windows = 2
    default_sample_rate = 16000
    classifier_prefix = "classifier."
    #: the convolutional front end needs one receptive field (400 samples = 25 ms) for one frame
    min_input_samples = 400
    supports_bfloat16 = True

    def __init__(
        self, aves_variant: str = "base", precision: Literal["float32", "bfloat16"] = "float32", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if self.audio_config.representation != "raw":
            raise ConfigError(
                f"AVES reads raw waveforms; audio_config.representation is '{self.audio_config.representation}' "
                "(use representation: raw)"
            )
        if aves_variant not in AVES_CONFIGS:
            raise ConfigError(f"unknown aves_variant '{aves_variant}': choose one of {', '.join(AVES_CONFIGS)}")
        self.variant = aves_variant
        config = AVES_CONFIGS[aves_variant]
        self.model = wav2vec2_model(**config, aux_num_out=None)
        self._embedding_dim = config["encoder_embed_dim"]
        if self.pretrained:
            self._load_birdaves()
        self._set_precision(precision, self.model.encoder)
        if self.num_classes is not None:
            self.classifier = nn.Linear(self._embedding_dim, self.num_classes)

    # ----------------------------------------------------------------- weights
    def convert_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept the ESP ``.torchaudio.pt`` files too: bare torchaudio names and old weight_norm names."""
        has_prefix = any(k.startswith(_PREFIX) for k in state_dict)
        converted = {}
        for key, value in state_dict.items():
            if not has_prefix and not key.startswith(self.classifier_prefix):
                key = _PREFIX + key
            for old, new in _OLD_WEIGHT_NORM.items():
                if key.endswith(old):
                    key = key[: -len(old)] + new
            converted[key] = value
        return converted

    def _load_birdaves(self) -> None:
        """``pretrained=True``: the public BirdAVES biox weights for this variant (downloaded once, cached)."""
        url = BIRDAVES_URLS[self.variant]
        path = resolve_checkpoint(url, model_name=f"BirdAVES biox {self.variant}")
        state = self.convert_state_dict(load_state_dict(path))
        self.load_state_dict(state, strict=True)
        log.info("loaded BirdAVES biox %s weights from %s", self.variant, path)

    # ----------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, samples // 320, D) output of the last transformer layer.

        ``padding_mask`` is not used: like avex and the AVES package, the whole input is encoded (HuBERT's
        convolutional GroupNorm sees padding anyway; the AVES README advises batch size 1 for padded clips).
        """
        return self.in_micro_batches(self._encode, x)

    def _encode(self, x: torch.Tensor, _padding_mask: None = None) -> torch.Tensor:
        with self.precision_context(x.device.type):
            return self._transformer_output(x).float()

    def _transformer_output(self, x: torch.Tensor) -> torch.Tensor:
        # The steps of torchaudio's ``extract_features``, keeping only the running output instead of a
        # list of all layers (12 copies of the sequence add up for long recordings).
        frames, _ = self.model.feature_extractor(x, None)
        x = self.model.encoder.feature_projection(frames)
        transformer = self.model.encoder.transformer
        x = x + transformer.pos_conv_embed(x)
        if transformer.layer_norm_first:
            x = transformer.layer_norm(x)
        x = transformer.dropout(x)
        position_bias = None
        for layer in transformer.layers:
            x, position_bias = layer(x, None, position_bias=position_bias)
        return x

    def get_embedding_dim(self) -> int:
        return self._embedding_dim

    def layer_modules(self) -> "OrderedDict[str, nn.Module]":
        """The transformer layers, in order (12 for base, 24 for large)."""
        layers = self.model.encoder.transformer.layers
        return OrderedDict((f"model.encoder.transformer.layers.{i}", layer) for i, layer in enumerate(layers))

    def extra_repr(self) -> str:
        return f"variant={self.variant}, " + super().extra_repr()
