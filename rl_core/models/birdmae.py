"""Bird-MAE (Rauch et al. 2025, "Can Masked Autoencoders Also Listen to Birds?", arXiv:2504.12880): the ViT
encoder of a masked autoencoder pretrained on BirdSet (XCL), written natively in torch.

Variants (``birdmae_variant``): "base" (ViT-B/16: 768-d, 12 blocks, 12 heads), "large" (1024-d, 24 blocks,
16 heads) and "huge" (1280-d, 32 blocks, 16 heads); all 32 kHz, 5-s windows.

  waveform (B, samples) at 32 kHz
  -> zero-pad or cut to 5 s (160,000 samples), subtract each clip's mean
  -> Kaldi fbank: 128 mel, 25 ms hanning frames every 10 ms, htk_compat, no dither -> 498 frames
  -> pad to 512 frames with the clip's minimum fbank value (cut if longer), then (x - (-7.2)) / (2 * 4.43)
  -> image (B, 1, 512 time, 128 mel) -> 16x16 patches (conv): 32 x 8 = 256 patches + ``pos_embed[1:]``
  -> prepend ``cls_token + pos_embed[0]`` -> pre-norm blocks ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``
  -> tokens (B, 257, D), CLS first (``return_features_only=True``).

The pooled embedding is what the public model returns (its ``global_pool="mean"``): the mean of the 256 patch
tokens, then ``fc_norm``; the CLS token and ``norm`` are unused by that path (``norm`` is kept for weight
compatibility and is applied by nothing). A head, when asked for, is a Linear(D, n) on that embedding.

Constants and their sources: the front end (5-s clip, DC removal, Kaldi fbank at 32 kHz with 128 mel bins and
10-ms shift, 512 target frames padded with the minimum, mean -7.2, std 4.43, divided by 2 * std) is the
Bird-MAE feature extractor of the Hugging Face repos ``DBD-research-group/Bird-MAE-{Base,Huge}`` (remote code
that avex loads with trust_remote_code). That file could not be read offline; the recipe was taken from the
Bird-MAE training code (``transforms.py``, ``BaseTransform``, in the Bird-MAE GitHub code base: pad/truncate
the waveform to the clip length, subtract its mean, ``kaldi.fbank(htk_compat=True, use_energy=False,
window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)``, pad to ``target_length`` with the
minimum, ``(x - mean) / (2 * std)``) and from public ports of the HF feature extractor that state they match its
output (found with the code search), which agree on the constants -7.2 / 4.43 / 512. One difference: the
training code takes the padding minimum over the whole batch; we take it per clip (identical for one clip), so
that a clip's embedding does not depend on the other clips in its batch. The model constants (patch 16, image
512 x 128, LayerNorm eps 1e-6, qkv bias, MLP ratio 4, sizes per variant, sin-cos ``pos_embed`` with a zero CLS
row) come from the same public model code.

Parameter names. The public ``model.safetensors`` holds the encoder's own names: ``patch_embed.proj``,
``cls_token``, ``pos_embed`` (1, 257, D), ``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``,
``norm``, ``fc_norm``. avex's BirdMAE wrapper keeps the Hugging Face module as ``model`` and its head as
``classifier``, so its state dict is ``model.<public name>`` + ``classifier.*``; our module uses the same
layout (``tests/fixtures/birdmae_base_state_dict_shapes.json`` pins it) and :meth:`BirdMAE.convert_state_dict`
also accepts the public file's bare names. (avex's head is Linear(1280, n) for every variant; ours is
Linear(D, n).) avex builds the module from the hub, so no offline round trip against it was possible.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
from torch import nn

from rl_core.errors import ConfigError
from rl_core.kaldi_fbank import KaldiFbank
from rl_core.models._vit_parts import Attention, Mlp, PatchEmbed, sincos_2d
from rl_core.models.base import ModelBase
from rl_core.registry import register_model_class

VARIANTS = {  # dim, depth, heads
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}
SAMPLE_RATE = 32000
CLIP_SAMPLES = 5 * SAMPLE_RATE
TARGET_FRAMES = 512
MEL_BINS = 128
PATCH = 16
FBANK_MEAN = -7.2
FBANK_STD = 4.43
NORM_EPS = 1e-6


class PreNormBlock(nn.Module):
    """Standard ViT block: LayerNorm before attention and before the MLP."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class BirdMAEEncoder(nn.Module):
    """Spectrogram image (B, 1, 512, 128) -> tokens (B, 257, dim), CLS first."""

    def __init__(self, dim: int, depth: int, num_heads: int) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        # The public code builds this table on an (8, 32) grid (mel patches x time patches) and prepends a zero
        # row for CLS; it is frozen and stored in the checkpoint, so the table is what matters, not the grid.
        table = torch.cat([torch.zeros(1, dim), sincos_2d(dim, MEL_BINS // PATCH, TARGET_FRAMES // PATCH)])
        self.pos_embed = nn.Parameter(table.unsqueeze(0), requires_grad=False)
        self.blocks = nn.ModuleList(PreNormBlock(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)  # used only by the public code's "cls" pooling
        self.fc_norm = nn.LayerNorm(dim, eps=NORM_EPS)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(spectrogram) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return x


@register_model_class
class BirdMAE(ModelBase):
    """Bird-MAE encoder on 32-kHz audio, 5-s windows: ``forward_features`` gives (B, 257, D), CLS first.

    ``precision="bfloat16"`` stores the transformer blocks' Linear weights in bf16 and runs the encoder under
    autocast (the fbank front end, the pooling norm and any head stay float32; ModelBase._set_precision).
    """

    name = "birdmae"
    default_sample_rate = SAMPLE_RATE
    default_window_seconds = 5.0
    has_cls_token = True
    min_input_samples = 800  # one 25-ms frame at 32 kHz
    supports_bfloat16 = True

    def __init__(
        self,
        birdmae_variant: Literal["base", "large", "huge"] = "base",
        precision: Literal["float32", "bfloat16"] = "float32",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if birdmae_variant not in VARIANTS:
            raise ConfigError(f"unknown birdmae_variant '{birdmae_variant}': use one of {', '.join(VARIANTS)}")
        if self.sample_rate != SAMPLE_RATE:
            raise ConfigError(f"Bird-MAE works on {SAMPLE_RATE} Hz audio; audio_config.sample_rate is {self.sample_rate}")
        if self.pretrained:
            raise ConfigError(
                "Bird-MAE has no weights built into the code: load 'birdmae_base' / 'birdmae_huge' or pass "
                "checkpoint_path=..."
            )
        self.variant = birdmae_variant
        dim, depth, heads = VARIANTS[birdmae_variant]
        self.embed_dim = dim
        self.fbank = KaldiFbank(SAMPLE_RATE, MEL_BINS, window_type="hanning")
        self.model = BirdMAEEncoder(dim, depth, heads)  # ``model.`` as in avex's wrapper
        self._set_precision(precision, self.model.blocks)
        if self.num_classes is not None and not self.return_features_only:
            self.classifier = nn.Linear(dim, self.num_classes)

    def get_embedding_dim(self) -> int:
        return self.embed_dim

    def layer_modules(self) -> "OrderedDict[str, nn.Module]":
        return OrderedDict((f"layer_{i}", block) for i, block in enumerate(self.model.blocks))

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> normalised (B, 1, 512, 128) image, as Bird-MAE's feature extractor makes it."""
        if x.shape[-1] < CLIP_SAMPLES:
            x = nn.functional.pad(x, (0, CLIP_SAMPLES - x.shape[-1]))
        else:
            x = x[:, :CLIP_SAMPLES]
        x = x - x.mean(dim=-1, keepdim=True)
        fbank = self.fbank(x)
        frames = fbank.shape[1]
        if frames < TARGET_FRAMES:
            floor = fbank.amin(dim=(1, 2), keepdim=True)  # silence level of each clip
            fill = floor.expand(-1, TARGET_FRAMES - frames, MEL_BINS)
            fbank = torch.cat([fbank, fill], dim=1)
        else:
            fbank = fbank[:, :TARGET_FRAMES]
        return ((fbank - FBANK_MEAN) / (2.0 * FBANK_STD)).unsqueeze(1)

    def forward_features(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if padding_mask is not None:
            raise ConfigError("Bird-MAE does not take a padding_mask: every clip is padded or cut to 5 s")
        spectrogram = self.spectrogram(x)
        with self.precision_context(spectrogram.device.type):
            return self.model(spectrogram).float()

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Mean of the patch tokens, then ``fc_norm`` (the public model's output)."""
        return self.model.fc_norm(features[:, 1:].mean(dim=1))

    def convert_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept avex keys (``model.*`` + ``classifier.*``) and the public file's bare encoder keys."""
        converted = {}
        for key, value in state_dict.items():
            if key.startswith("module."):
                key = key[len("module."):]
            if not key.startswith(("model.", self.classifier_prefix)):
                key = "model." + key
            converted[key] = value
        return converted
