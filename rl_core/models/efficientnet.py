"""EfficientNet B0 / B1 on log-mel spectrograms (the ESP-AVES2 EfficientNet models).

Front end (must match the one the official weights were trained with):
    STFT power (n_fft 800, hop 160, win 800, periodic hann, centred with reflect padding)
    -> 128-band mel filterbank (HTK mel scale, no area normalisation, 0 Hz to sr/2: torchaudio's
       ``melscale_fbanks`` defaults, which is what the peer package avex applies through ``MelScale``)
    -> log(x + 1e-6) -> per-example min-max to [0, 1] -> the one channel repeated to 3.
The network is torchvision's EfficientNet; its state_dict names (``model.features.*``,
``model.classifier.1.*`` for the head) are those of the official safetensors files.
A 10-s 16 kHz clip gives a (128 mel x 1001 frame) image and (B, 1280, 4, 32) features.
"""

from __future__ import annotations

import logging
import urllib.parse
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
import torchaudio
from torch import nn
from torchvision.models import EfficientNet_B0_Weights, EfficientNet_B1_Weights, efficientnet_b0, efficientnet_b1

from rl_core.checkpoints import load_state_dict, resolve_checkpoint
from rl_core.configs import AudioConfig
from rl_core.errors import CheckpointMismatchError, CheckpointNotAvailableError, ConfigError
from rl_core.models.base import ModelBase
from rl_core.registry import register_model_class

log = logging.getLogger(__name__)

#: the front end of the official ESP-AVES2 EfficientNet checkpoints
ESP_EFFICIENTNET_AUDIO = AudioConfig(
    sample_rate=16000,
    n_fft=800,
    hop_length=160,
    win_length=800,
    window="hann",
    n_mels=128,
    representation="mel_spectrogram",
    normalize=True,
    target_length_seconds=10.0,
    window_selection="random",
    center=True,
)

#: variant -> (torchvision constructor, ImageNet weights used when pretrained=True)
VARIANTS = {
    "b0": (efficientnet_b0, EfficientNet_B0_Weights.IMAGENET1K_V1),
    "b1": (efficientnet_b1, EfficientNet_B1_Weights.IMAGENET1K_V1),
}

LOG_OFFSET = 1e-6  # added to the mel power before the log
MINMAX_EPS = 1e-8  # keeps a silent (constant) clip from dividing by zero


class LogMelImage(nn.Module):
    """Waveform (B, samples) -> normalised log-mel "image" (B, 3, n_mels, frames).

    The window and filterbank are non-persistent buffers: they follow the model to its device (so the
    whole batch is transformed there) but stay out of the state_dict, as in the official checkpoints.
    """

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        if cfg.window not in ("hann", "hamming"):
            raise ConfigError(f"EfficientNet front end supports window 'hann' or 'hamming', got '{cfg.window}'")
        if cfg.win_length > cfg.n_fft:
            raise ConfigError(f"win_length ({cfg.win_length}) must not exceed n_fft ({cfg.n_fft})")
        self.n_fft = cfg.n_fft
        self.hop_length = cfg.hop_length
        self.center = cfg.center
        self.normalize = cfg.normalize
        window_fn = torch.hann_window if cfg.window == "hann" else torch.hamming_window
        self.register_buffer("window", window_fn(cfg.win_length), persistent=False)
        # torch.device("cpu"): torchaudio reads values of the filterbank while building it, which a
        # meta-device context (used to list layers without allocating weights) cannot provide.
        with warnings.catch_warnings(), torch.device("cpu"):
            # With n_fft 800 the lowest HTK bands fall between FFT bins and are all zero; that is the
            # official front end (the checkpoints were trained with it), so torchaudio's warning is noise.
            warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
            fbank = torchaudio.functional.melscale_fbanks(
                n_freqs=cfg.n_fft // 2 + 1,
                f_min=0.0,
                f_max=cfg.sample_rate / 2,
                n_mels=cfg.n_mels,
                sample_rate=cfg.sample_rate,
                norm=None,
                mel_scale="htk",
            )  # (n_freqs, n_mels)
        self.register_buffer("mel_fbank", fbank.T.contiguous(), persistent=False)  # (n_mels, n_freqs)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            waveform,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.window.shape[0],
            window=self.window,
            center=self.center,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # |X|^2 without a sqrt then a square
        mel = torch.matmul(self.mel_fbank, power)  # (B, n_mels, frames)
        if self.normalize:
            mel = torch.log(mel + LOG_OFFSET)
            low = mel.amin(dim=(-2, -1), keepdim=True)
            high = mel.amax(dim=(-2, -1), keepdim=True)
            mel = (mel - low) / (high - low + MINMAX_EPS)
        # The network was trained on 3 identical channels; expand shares the memory of the one channel.
        return mel.unsqueeze(1).expand(-1, 3, -1, -1)


def _audio_config_for(audio_config: AudioConfig | None) -> AudioConfig:
    """The ESP front end, with the fields the caller set explicitly taking precedence.

    AudioConfig's generic defaults (n_fft 2048, representation "raw") describe no EfficientNet checkpoint,
    so fields left unset fall back to the ESP values rather than to those defaults.
    """
    if audio_config is None:
        return ESP_EFFICIENTNET_AUDIO
    explicit = {field: getattr(audio_config, field) for field in audio_config.model_fields_set}
    merged = ESP_EFFICIENTNET_AUDIO.model_copy(update=explicit)
    if merged.representation != "mel_spectrogram":
        raise ConfigError(
            f"EfficientNet takes a mel spectrogram; audio_config.representation is "
            f"'{merged.representation}'. Use representation: mel_spectrogram (fields you leave out take the "
            f"ESP front end's values: n_fft 800, hop 160, 128 mels)"
        )
    return merged


@register_model_class
class EfficientNet(ModelBase):
    """torchvision EfficientNet (B0 or B1) on a normalised log-mel spectrogram."""

    name = "efficientnet"
    default_sample_rate = 16000
    #: the head is the Linear of torchvision's classifier Sequential(Dropout, Linear)
    classifier_prefix = "model.classifier."

    def __init__(self, efficientnet_variant: str = "b0", audio_config: AudioConfig | None = None, **kwargs) -> None:
        audio_config = _audio_config_for(audio_config)
        super().__init__(audio_config=audio_config, **kwargs)
        if efficientnet_variant not in VARIANTS:
            raise ConfigError(
                f"unknown efficientnet_variant '{efficientnet_variant}': choose one of {', '.join(VARIANTS)}"
            )
        self.variant = efficientnet_variant
        self.front_end = LogMelImage(audio_config)
        # Reflect padding of the centred STFT needs more than n_fft // 2 samples; one window is safe.
        self.min_input_samples = audio_config.n_fft

        build, _ = VARIANTS[efficientnet_variant]
        self.model = build(weights=None)
        self._embedding_dim = self.model.classifier[-1].in_features
        if self.pretrained:
            self._load_imagenet_features()
        if self.num_classes is None:
            # No head: drop torchvision's 1000-class ImageNet layer so it cannot be mistaken for one.
            self.model.classifier = nn.Identity()
        else:
            self.model.classifier[-1] = nn.Linear(self._embedding_dim, self.num_classes)
            # ModelBase applies ``self.classifier`` to the pooled embedding. The head must keep its
            # checkpoint name ``model.classifier.1``, so it is referenced here without being registered
            # a second time (a registered alias would duplicate its tensors in the state_dict).
            object.__setattr__(self, "classifier", self.model.classifier)

    # ----------------------------------------------------------------- weights
    @classmethod
    def num_classes_in_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> int | None:
        weight = state_dict.get(f"{cls.classifier_prefix}1.weight")
        return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None

    def _load_imagenet_features(self) -> None:
        """torchvision's ImageNet weights for the convolutional trunk (its 1000-class layer is not kept).

        Looked up first where torchvision caches them (``torch.hub.get_dir()/checkpoints``), then
        downloaded through rl_core's checkpoint code (time-limited; fails clearly when offline).
        """
        _, weights = VARIANTS[self.variant]
        filename = Path(urllib.parse.urlparse(weights.url).path).name
        cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
        if cached.is_file():
            path = cached
        else:
            try:
                path = resolve_checkpoint(weights.url, model_name=f"efficientnet_{self.variant} (ImageNet)")
            except CheckpointNotAvailableError as err:
                raise CheckpointNotAvailableError(
                    f"pretrained=True needs torchvision's ImageNet weights for EfficientNet-{self.variant.upper()} "
                    f"and they are not on this machine: {err} torchvision's own cache was checked too: place "
                    f"{weights.url} at {cached}, or use pretrained=False / a checkpoint_path."
                ) from None
        state = load_state_dict(path)
        trunk = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        if not trunk:
            raise CheckpointMismatchError(f"{path} holds no EfficientNet 'features.*' weights")
        self.model.features.load_state_dict(trunk, strict=True)
        log.info("loaded ImageNet weights for EfficientNet-%s from %s", self.variant.upper(), path)

    # ----------------------------------------------------------------- forward
    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """The network's input image (B, 3, n_mels, frames) for a checked (B, samples) batch."""
        return self.front_end(x)

    def forward_features(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1280, n_mels / 32, frames / 32) feature map. ``padding_mask`` is not used by a CNN."""
        # oneDNN's CPU convolutions (depthwise ones especially) run faster on channels-last input; the
        # weights stay in the default layout, so state_dicts remain plain contiguous tensors.
        image = self.front_end(x).contiguous(memory_format=torch.channels_last)
        return self.model.features(image).contiguous()

    def get_embedding_dim(self) -> int:
        return self._embedding_dim

    def layer_modules(self) -> "OrderedDict[str, nn.Module]":
        """The nine stages of ``model.features`` (stem conv, seven MBConv stages, final 1x1 conv)."""
        return OrderedDict((f"model.features.{i}", stage) for i, stage in enumerate(self.model.features))

    def extra_repr(self) -> str:
        return f"variant={self.variant}, " + super().extra_repr()


__all__ = ["EfficientNet", "ESP_EFFICIENTNET_AUDIO", "LogMelImage"]
