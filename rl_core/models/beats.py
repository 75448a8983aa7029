"""BEATs (Chen et al. 2022, "BEATs: Audio Pre-Training with Acoustic Tokenizers"), base size, in plain torch.

Pipeline, top to bottom:
  waveform (B, samples)
  -> Kaldi log-mel fbank, 128 bins, 25 ms / 10 ms, on samples scaled by 2^15 (batched, on the model's device)
  -> (x - 15.41663) / (2 * 6.55582)
  -> 16x16 patches: (B, frames // 16 * 8, 512) -> LayerNorm -> Linear 512 -> 768
  -> convolutional position embedding (grouped Conv1d, kernel 128) -> LayerNorm
  -> 12 post-LayerNorm "DeepNorm" transformer layers whose attention carries a T5-style relative position bias,
     gated per query and head (BEATs' "GRU" gate)
  -> (B, tokens, 768); 10 s at 16 kHz gives 62 time x 8 frequency patches = 496 tokens, time-major.

Parameter and buffer names follow the module the ESP (avex) safetensors were written from: the network lives
under ``backbone.`` and a trained head is ``classifier`` (Linear 768 -> classes). ``convert_state_dict`` also
accepts Microsoft's original BEATs checkpoints (no ``backbone.`` prefix, old weight-norm names, no fbank buffers).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from rl_core.errors import ConfigError
from rl_core.kaldi_fbank import KaldiFbank
from rl_core.models.base import ModelBase
from rl_core.registry import register_model_class

log = logging.getLogger(__name__)

# Fixed by the published checkpoints (BEATs base).
EMBED_DIM = 768
PATCH_DIM = 512
PATCH_SIZE = 16
NUM_LAYERS = 12
NUM_HEADS = 12
FFN_DIM = 3072
POS_CONV_KERNEL = 128
POS_CONV_GROUPS = 16
REL_POS_BUCKETS = 320
REL_POS_MAX_DISTANCE = 800
NUM_MEL_BINS = 128
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582


# ----------------------------------------------------------------------------------------------- front end
def beats_fbank() -> KaldiFbank:
    """BEATs' front end: Kaldi's fbank defaults at 16 kHz (Povey window, pre-emphasis 0.97, DC removal, mel bands
    from 20 Hz to Nyquist, no dither), 128 bins. Its window and filterbank are checkpoint buffers (``window``,
    ``mel_fb``) because the ESP files store them."""
    return KaldiFbank(16000, NUM_MEL_BINS, window_type="povey", persistent_buffers=True)


# ----------------------------------------------------------------------------------------------- transformer
def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device: torch.device) -> torch.Tensor:
    """T5's bidirectional bucketing of key - query offsets: exact near zero, logarithmic up to max_distance."""
    positions = torch.arange(length, device=device)
    offset = positions[None, :] - positions[:, None]
    half = num_buckets // 2
    buckets = (offset > 0).long() * half
    distance = offset.abs()
    exact = half // 2
    # float32 log as in the reference, so rounding at bucket edges agrees with the checkpoints' training code
    far = exact + (torch.log(distance.float() / exact) / math.log(max_distance / exact) * (half - exact)).long()
    far = far.clamp(max=half - 1)
    return buckets + torch.where(distance < exact, distance, far)


class GatedRelPosAttention(nn.Module):
    """Multi-head self-attention with BEATs' gated relative position bias, computed with fused SDPA.

    The bias table (``relative_attention_bias``) belongs to layer 0 and is shared by all layers; each layer gates
    it per query and head: gate = a * (b * grep_a - 1) + 2 with a, b = sigmoid of a small projection of the raw
    query. Since the gate scales the (unchanged) bias additively inside the softmax, the whole thing is an
    additive float mask for ``scaled_dot_product_attention``: identical maths to the explicit softmax.
    """

    def __init__(self, dim: int = EMBED_DIM, num_heads: int = NUM_HEADS) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.relative_attention_bias = nn.Embedding(REL_POS_BUCKETS, num_heads)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.grep_linear = nn.Linear(self.head_dim, 8)
        self.grep_a = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def position_bias(self, length: int) -> torch.Tensor:
        """(H, T, T) bias from the bucket table."""
        buckets = relative_position_buckets(length, REL_POS_BUCKETS, REL_POS_MAX_DISTANCE,
                                            self.relative_attention_bias.weight.device)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
        batch, length, dim = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        gate_a, gate_b = torch.sigmoid(self.grep_linear(q).view(batch, self.num_heads, length, 2, 4).sum(-1)).chunk(2, -1)
        gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0  # (B, H, T, 1)
        mask = gate * position_bias.to(gate.dtype)  # (B, H, T, T)
        if key_padding is not None:
            mask = mask.masked_fill(key_padding[:, None, None, :], float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class EncoderLayer(nn.Module):
    """Post-LayerNorm transformer layer with DeepNorm residual scaling (residual * (2 * layers)^(1/4))."""

    def __init__(self, dim: int = EMBED_DIM, ffn_dim: int = FFN_DIM, num_layers: int = NUM_LAYERS) -> None:
        super().__init__()
        self.self_attn = GatedRelPosAttention(dim)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.residual_scale = math.pow(2 * num_layers, 0.25)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
        x = self.self_attn_layer_norm(x * self.residual_scale + self.self_attn(x, position_bias, key_padding))
        return self.final_layer_norm(x * self.residual_scale + self.fc2(F.gelu(self.fc1(x))))


class TransformerEncoder(nn.Module):
    def __init__(self, dim: int = EMBED_DIM, num_layers: int = NUM_LAYERS) -> None:
        super().__init__()
        conv = nn.Conv1d(dim, dim, POS_CONV_KERNEL, padding=POS_CONV_KERNEL // 2, groups=POS_CONV_GROUPS)
        # Weight norm over dim 2 as trained; the parametrization gives the checkpoint's names
        # (pos_conv.0.parametrizations.weight.original0 = g, original1 = v).
        self.pos_conv = nn.Sequential(parametrizations.weight_norm(conv, name="weight", dim=2))
        self.layers = nn.ModuleList(EncoderLayer(dim, num_layers=num_layers) for _ in range(num_layers))
        for layer in self.layers[1:]:  # one bias table, owned by layer 0, seen under every layer's name
            del layer.self_attn.relative_attention_bias  # re-added last: the checkpoints' key order
            layer.self_attn.relative_attention_bias = self.layers[0].self_attn.relative_attention_bias
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        if key_padding is not None:
            x = x.masked_fill(key_padding.unsqueeze(-1), 0.0)
        # Even kernel with padding k/2 yields one extra step at the end: drop it ("same" padding).
        position = F.gelu(self.pos_conv(x.transpose(1, 2))[..., :-1]).transpose(1, 2)
        x = self.layer_norm(x + position)
        bias = self.layers[0].self_attn.position_bias(x.shape[1]).unsqueeze(0)  # computed once, shared by layers
        for layer in self.layers:
            x = layer(x, bias, key_padding)
        return x


class BEATsBackbone(nn.Module):
    """Front end, patch embedding and transformer (the ``backbone.`` of the ESP checkpoints)."""

    def __init__(self, fine_tuned: bool = False, predictor_classes: int = 527) -> None:
        super().__init__()
        self.post_extract_proj = nn.Linear(PATCH_DIM, EMBED_DIM)
        # Always the 16 kHz design (400-sample window, 160-sample hop), also for the 32 kHz SED "birdcode"
        # encoder, which was trained that way: 5 s at 32 kHz gives 496 tokens like 10 s at 16 kHz.
        self.fbank = beats_fbank()
        self.patch_embedding = nn.Conv2d(1, PATCH_DIM, PATCH_SIZE, stride=PATCH_SIZE, bias=False)
        self.encoder = TransformerEncoder()
        self.layer_norm = nn.LayerNorm(PATCH_DIM)
        # The AudioSet head of fine-tuned BEATs checkpoints. It is part of the stored weights (ESP's SL and NatureLM
        # files carry it) but no output of this model uses it; the ESP head is ``classifier``.
        self.predictor = nn.Linear(EMBED_DIM, predictor_classes) if fine_tuned else None

    def fbank_features(self, waveforms: torch.Tensor) -> torch.Tensor:
        # Front end in float32 even under autocast: log-mel of a bf16 spectrum drifts visibly.
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            fbank = self.fbank(waveforms.float() * 32768.0)
        return (fbank - FBANK_MEAN) / (2.0 * FBANK_STD)

    def forward(self, waveforms: torch.Tensor, padding_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, samples) -> features (B, tokens, 768) and the token padding mask (None without a sample mask)."""
        fbank = self.fbank_features(waveforms)  # (B, frames, 128)
        patches = self.patch_embedding(fbank.unsqueeze(1))  # (B, 512, frames // 16, 8)
        tokens = self.layer_norm(patches.flatten(2).transpose(1, 2))  # (B, T * 8, 512), time-major
        key_padding = None
        if padding_mask is not None:
            key_padding = self._token_padding(padding_mask, fbank.shape[1], tokens.shape[1])
        return self.encoder(self.post_extract_proj(tokens), key_padding), key_padding

    @staticmethod
    def _token_padding(padding_mask: torch.Tensor, frames: int, tokens: int) -> torch.Tensor:
        """Sample mask (True = padding) -> token mask: a token is padding when all the samples it covers are.

        Same reduction as the reference: split the mask evenly over frames, then over tokens (dropping the
        remainder each time).
        """
        def reduce(mask: torch.Tensor, parts: int) -> torch.Tensor:
            extra = mask.shape[1] % parts
            if extra:
                mask = mask[:, :-extra]
            return mask.view(mask.shape[0], parts, -1).all(-1)

        return reduce(reduce(padding_mask.bool(), frames), tokens)


# ----------------------------------------------------------------------------------------------- rl_core model
@register_model_class
class BEATs(ModelBase):
    """BEATs base (12 layers, 768-d) as an rl_core model.

    Arguments beyond ModelBase's:
      fine_tuned: the backbone carries the AudioSet predictor of fine-tuned BEATs checkpoints
        (``backbone.predictor``, 768 -> ``predictor_classes``), as the ESP SL and NatureLM files do. It only
        makes those files load; outputs never use it.
      use_naturelm: clip the waveform to [-1, 1] first, as NatureLM's BEATs was trained.
      precision: "float32", or "bfloat16": the transformer runs under autocast with its Linear weights stored in
        bf16 (front end, norms and heads stay float32; see bench/RESULTS.md for its accuracy against float32).
    """

    name = "beats"
    cpu_micro_batch_windows = 2
    default_sample_rate = 16000
    # one 16-frame patch needs 400 + 15 * 160 samples; shorter clips are zero-padded up to it
    min_input_samples = 400 + (PATCH_SIZE - 1) * 160
    supports_bfloat16 = True

    def __init__(
        self,
        fine_tuned: bool = False,
        use_naturelm: bool = False,
        predictor_classes: int = 527,
        precision: Literal["float32", "bfloat16"] = "float32",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.fine_tuned = fine_tuned
        self.use_naturelm = use_naturelm
        self.backbone = BEATsBackbone(fine_tuned=fine_tuned, predictor_classes=predictor_classes)
        # bf16 weights were ~25% faster than autocast alone at batch 1 (bench/RESULTS.md)
        self._set_precision(precision, self.backbone.post_extract_proj, self.backbone.encoder.layers)
        if self.num_classes is not None:
            self.classifier = nn.Linear(EMBED_DIM, self.num_classes)

    def get_embedding_dim(self) -> int:
        return EMBED_DIM

    def _encode(self, x: torch.Tensor, padding_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.use_naturelm:
            x = x.clamp(-1.0, 1.0)
        if padding_mask is not None:
            padding_mask = torch.as_tensor(padding_mask).to(device=x.device, dtype=torch.bool)
            if padding_mask.ndim == 1:
                padding_mask = padding_mask.unsqueeze(0)
            if padding_mask.shape[0] != x.shape[0] or padding_mask.shape[1] > x.shape[1]:
                raise ConfigError(f"padding_mask shape {tuple(padding_mask.shape)} does not fit audio {tuple(x.shape)}")
            # prepare_input may have zero-padded a short clip: those samples are padding too
            padding_mask = F.pad(padding_mask, (0, x.shape[1] - padding_mask.shape[1]), value=True)
        return self.in_micro_batches(self._backbone_pass, x, padding_mask)

    def _backbone_pass(self, x: torch.Tensor, padding_mask: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        with self.precision_context(x.device.type):
            features, token_padding = self.backbone(x, padding_mask)
        return features.float(), token_padding

    def forward_features(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._encode(x, padding_mask)[0]

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """As ModelBase.forward, but the mean over tokens skips padded tokens when a padding mask is given."""
        features, token_padding = self._encode(self.prepare_input(x), padding_mask)
        if self.return_features_only:
            return features
        if token_padding is None:
            embedding = features.mean(dim=1)
        else:
            keep = (~token_padding).unsqueeze(-1).to(features.dtype)
            embedding = (features * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        return self.classifier(embedding) if self.classifier is not None else embedding

    def layer_modules(self) -> "OrderedDict[str, nn.Module]":
        """``patch_embed`` (the projected patches entering the transformer) then ``layer_0`` .. ``layer_11``."""
        layers: OrderedDict[str, nn.Module] = OrderedDict(patch_embed=self.backbone.post_extract_proj)
        for i, layer in enumerate(self.backbone.encoder.layers):
            layers[f"layer_{i}"] = layer
        return layers

    @classmethod
    def num_classes_in_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> int | None:
        """Classes of the ESP head ``classifier`` (never ``backbone.predictor``, BEATs' own AudioSet head)."""
        weight = state_dict.get("classifier.weight")
        if weight is None:
            weight = state_dict.get("model.classifier.weight")
        return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None

    def convert_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept ESP/avex files as they are, and Microsoft's original BEATs checkpoints.

        * a ``model.`` wrapper prefix is dropped;
        * original checkpoints have no ``backbone.`` prefix: it is added to every non-classifier key;
        * ``torch.nn.utils.weight_norm`` names (``weight_g``/``weight_v``) become the parametrization's;
        * missing fbank buffers are filled in (they are constants of the front end);
        * a file that stores the shared relative-position table once (e.g. written with safetensors'
          ``save_model``, which drops aliases) gets it copied to every layer's name.
        Keys that match nothing are left alone, so the strict loader reports them.
        """
        out = {k.removeprefix("model."): v for k, v in state_dict.items()}
        if not any(k.startswith("backbone.") for k in out) and "patch_embedding.weight" in out:
            out = {k if k.startswith("classifier.") else f"backbone.{k}": v for k, v in out.items()}
        renames = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
        for old, new in renames.items():
            key = f"backbone.encoder.pos_conv.0.{old}"
            if key in out:
                out[f"backbone.encoder.pos_conv.0.{new}"] = out.pop(key)
        if "backbone.patch_embedding.weight" in out:
            for name, buffer in self.backbone.fbank.named_buffers():
                out.setdefault(f"backbone.fbank.{name}", buffer.detach().clone())
            table = "backbone.encoder.layers.{}.self_attn.relative_attention_bias.weight"
            if table.format(0) in out:
                for i in range(1, len(self.backbone.encoder.layers)):
                    out.setdefault(table.format(i), out[table.format(0)])
        return out

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, fine_tuned={self.fine_tuned}, use_naturelm={self.use_naturelm}, "
                f"precision={self.precision}")
