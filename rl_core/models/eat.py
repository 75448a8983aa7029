"""EAT (Efficient Audio Transformer, Chen et al. 2024, arXiv:2401.03497), base size, written natively in torch.

Architecture (EAT-base: 768-d, 12 heads, 12 post-norm blocks):

  waveform (B, samples) at 16 kHz
  -> subtract each clip's mean (DC removal)
  -> Kaldi fbank: 128 mel, 25 ms hanning frames every 10 ms, htk_compat, no dither (``rl_core.kaldi_fbank``)
  -> zero-pad or cut to 1024 frames (10.24 s), then (x - mean) / (2 * std)
  -> 16x16 patches (conv, stride 16): 64 time x 8 frequency = 512 patches, + fixed 2-D sin-cos positions
  -> prepend a learned CLS token (no position), LayerNorm (``pre_norm``)
  -> 12 blocks ``x = norm1(x + attn(x)); x = norm2(x + mlp(x))`` (post-norm, as data2vec 2.0 / EAT)
  -> (B, 513, 768), CLS first.

Every clip becomes 1024 frames, so a 5-s clip also yields 513 tokens (the tail patches see the zero padding).
The pooled embedding, and the input of the classifier head, is the CLS token: the ESP fine-tuned heads
(``esp_aves2_sl_eat_*``) were trained on it (avex's EAT wrapper pools with ``pooling="cls"`` by default).

The front end matches avex 1.4.0's ``EATAudioProcessor`` (``bench/peer/parity_eat_frontend.py``: at most 9e-4 apart,
from float32 summation order in the DC removal) and computes the fbank batched on the model's device.

Normalisation constants are arch kwargs: ``eat_norm_mean`` / ``eat_norm_std`` default to the EAT-base values
(-4.268 / 4.569); the ESP YAMLs set -5.553 / 4.606.

Parameter names. The ESP ``esp_aves2_*eat*`` safetensors files are state dicts of avex's ``EATHFModel``, which
holds the Hugging Face EAT module (``worstchan/EAT-base_epoch30_pretrain``, loaded with trust_remote_code) as
``backbone`` and a ``classifier`` Linear(768, n). That public HF code wraps its ``EAT`` module as ``model``
inside ``EATModel``, whose attributes are ``local_encoder.proj`` (the patch conv), ``extra_tokens`` (CLS),
``fixed_positional_encoder.positions`` (sin-cos table for ``max_length`` = 768 time patches x 8 frequency
patches, a non-trainable Parameter, so it is in the state dict; a table of another length is
fitted on load, see ``_fit_position_table``), ``blocks.i.{attn.qkv, attn.proj, norm1,
mlp.fc1, mlp.fc2, norm2}`` and ``pre_norm``; the ``fc_norm``/``head`` pair exists only in its "finetune"
variant, which avex does not use. Our module uses exactly these names under ``backbone.model.``, so our
state_dict is that of avex's module (``tests/fixtures/eat_state_dict_shapes.json``, derived from the public
code, pins it). :meth:`EAT.convert_state_dict` also accepts the public HF file (``model.*`` keys) and bare
``EAT`` keys. avex builds the module from the hub, so no offline round trip against avex's own module was
possible; the names come from reading the public model code.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Literal

import torch
from torch import nn

from rl_core.errors import ConfigError
from rl_core.kaldi_fbank import KaldiFbank
from rl_core.models._vit_parts import Attention, Mlp, PatchEmbed, sincos_2d
from rl_core.models.base import ModelBase
from rl_core.registry import register_model_class

log = logging.getLogger(__name__)

EMBED_DIM = 768
DEPTH = 12
NUM_HEADS = 12
PATCH = 16
MEL_BINS = 128
TARGET_FRAMES = 1024  # 10.24 s of 10-ms frames
MAX_TIME_PATCHES = 768  # length of the positional table in the public HF config (``max_length``)
NORM_EPS = 1e-6


class FixedPositions(nn.Module):
    """Holds the sin-cos table as a frozen Parameter named ``positions`` (the checkpoint's name)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        table = sincos_2d(dim, MAX_TIME_PATCHES, MEL_BINS // PATCH).unsqueeze(0)
        self.positions = nn.Parameter(table, requires_grad=False)


class PostNormBlock(nn.Module):
    """Transformer block with LayerNorm after each residual sum (EAT's ``layer_norm_first=False``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads, qkv_bias=True)
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = Mlp(dim, 4 * dim)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class EATEncoder(nn.Module):
    """The EAT backbone: spectrogram image (B, 1, 1024, 128) -> tokens (B, 1 + 512, 768)."""

    def __init__(self, dim: int = EMBED_DIM, depth: int = DEPTH, num_heads: int = NUM_HEADS) -> None:
        super().__init__()
        self.local_encoder = PatchEmbed(dim)
        self.extra_tokens = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.extra_tokens, std=0.02)
        self.fixed_positional_encoder = FixedPositions(dim)
        self.blocks = nn.ModuleList(PostNormBlock(dim, num_heads) for _ in range(depth))
        self.pre_norm = nn.LayerNorm(dim, eps=NORM_EPS)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        x = self.local_encoder(spectrogram)
        x = x + self.fixed_positional_encoder.positions[:, : x.shape[1]]
        x = torch.cat([self.extra_tokens.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pre_norm(x)
        for block in self.blocks:
            x = block(x)
        return x


@register_model_class
class EAT(ModelBase):
    """EAT-base on 16-kHz audio: ``forward_features`` gives (B, 513, 768) with the CLS token first.

    ``precision="bfloat16"`` stores the transformer blocks' Linear weights in bf16 and runs the encoder under
    autocast (the fbank front end and any head stay float32; ModelBase._set_precision).
    """

    name = "eat"
    cpu_micro_batch_windows = 2
    default_sample_rate = 16000
    has_cls_token = True
    min_input_samples = 400  # one 25-ms frame
    supports_bfloat16 = True

    def __init__(
        self,
        eat_norm_mean: float = -4.268,
        eat_norm_std: float = 4.569,
        precision: Literal["float32", "bfloat16"] = "float32",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if self.sample_rate != self.default_sample_rate:
            raise ConfigError(
                f"EAT works on {self.default_sample_rate} Hz audio; audio_config.sample_rate is {self.sample_rate}"
            )
        if self.pretrained:
            raise ConfigError(
                "EAT has no weights built into the code: load 'eat_base_epoch30_pretrain' (or an ESP EAT model), "
                "or pass checkpoint_path=..."
            )
        if not eat_norm_std > 0:
            raise ConfigError(f"eat_norm_std must be positive, got {eat_norm_std}")
        self.norm_mean = float(eat_norm_mean)
        self.norm_std = float(eat_norm_std)
        self.fbank = KaldiFbank(self.default_sample_rate, MEL_BINS, window_type="hanning")
        # ``backbone.model.`` mirrors avex's wrapper around the Hugging Face EATModel (see module docstring).
        self.backbone = nn.ModuleDict({"model": EATEncoder()})
        self._set_precision(precision, self.encoder.blocks)
        if self.num_classes is not None and not self.return_features_only:
            self.classifier = nn.Linear(EMBED_DIM, self.num_classes)

    @property
    def encoder(self) -> EATEncoder:
        return self.backbone["model"]

    def get_embedding_dim(self) -> int:
        return EMBED_DIM

    def layer_modules(self) -> "OrderedDict[str, nn.Module]":
        return OrderedDict((f"layer_{i}", block) for i, block in enumerate(self.encoder.blocks))

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> normalised (B, 1, 1024, 128) fbank image, as the EAT reference pipeline makes it."""
        x = x - x.mean(dim=-1, keepdim=True)
        fbank = self.fbank(x)
        frames = fbank.shape[1]
        if frames < TARGET_FRAMES:
            fbank = nn.functional.pad(fbank, (0, 0, 0, TARGET_FRAMES - frames))  # zeros, before normalising
        else:
            fbank = fbank[:, :TARGET_FRAMES]
        return ((fbank - self.norm_mean) / (2.0 * self.norm_std)).unsqueeze(1)

    def forward_features(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if padding_mask is not None:
            raise ConfigError("EAT does not take a padding_mask: every clip is padded or cut to 1024 frames")
        return self.in_micro_batches(lambda clips, _mask: self._encode(self.spectrogram(clips)), x)

    def _encode(self, spectrogram: torch.Tensor) -> torch.Tensor:
        with self.precision_context(spectrogram.device.type):
            return self.encoder(spectrogram).float()

    def micro_batch_clips(self, clip_samples: int) -> int:
        # every clip becomes a full 1024-frame window, whatever its length
        return self.cpu_micro_batch_windows or 1

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """The CLS token (what the ESP heads were trained on)."""
        return features[:, 0]

    def convert_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept avex/ESP keys (``backbone.model.*``), public HF keys (``model.*``) and bare EAT keys."""
        converted = {}
        for key, value in state_dict.items():
            if key.startswith("module."):  # DistributedDataParallel wrapper
                key = key[len("module."):]
            if key.startswith("model."):
                key = "backbone." + key
            elif not key.startswith(("backbone.", self.classifier_prefix)):
                key = "backbone.model." + key
            converted[key] = value
        return self._fit_position_table(converted)

    def _fit_position_table(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept a position table of another length (another ``max_length`` in the HF config).

        The table is a fixed sin-cos function of the patch index, never trained, and only its first 512 rows
        (64 time x 8 frequency patches) are used. A longer or shorter table (at least 512 rows, same width)
        is cut or completed from our own table, which has the same values, instead of failing on a shape.
        """
        key = "backbone.model.fixed_positional_encoder.positions"
        table = state_dict.get(key)
        own = self.encoder.fixed_positional_encoder.positions
        used = (TARGET_FRAMES // PATCH) * (MEL_BINS // PATCH)
        if table is None or table.shape == own.shape:
            return state_dict
        if table.ndim != 3 or table.shape[0] != 1 or table.shape[2] != own.shape[2] or table.shape[1] < used:
            return state_dict  # leave it to the strict shape check, which reports it
        fitted = own.detach().clone()
        rows = min(table.shape[1], fitted.shape[1])
        fitted[:, :rows] = table[:, :rows].to(fitted.dtype)
        log.info("EAT checkpoint position table has %d rows, model %d: using the first %d",
                 table.shape[1], own.shape[1], rows)
        return {**state_dict, key: fitted}
