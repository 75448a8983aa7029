"""A tiny real ModelBase architecture for tests (frames -> two token layers); registered as 'tiny_frames'."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from rl_core.configs import AudioConfig, ModelSpec
from rl_core.models.base import ModelBase
from rl_core.registry import register_model, register_model_class

SAMPLE_RATE = 8000


@register_model_class
class TinyFrames(ModelBase):
    """Cuts audio into 400-sample frames, takes log band energies (16 bands), two linear token layers."""

    name = "tiny_frames"
    default_sample_rate = SAMPLE_RATE

    def __init__(self, width: int = 16, **kwargs) -> None:
        super().__init__(**kwargs)
        self.width = width
        self.frame = 400
        torch.manual_seed(0)  # deterministic weights: two instances are identical
        self.layer1 = nn.Linear(16, width)
        self.layer2 = nn.Linear(width, width)
        nn.init.normal_(self.layer1.weight, std=0.5)
        nn.init.normal_(self.layer2.weight, std=0.5)
        if self.num_classes is not None:
            self.classifier = nn.Linear(width, self.num_classes)
        self.to(self.device)

    def forward_features(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        usable = x.shape[1] // self.frame * self.frame
        frames = x[:, :usable].reshape(x.shape[0], -1, self.frame)
        spectrum = torch.fft.rfft(frames, dim=-1).abs() ** 2
        bands = torch.log1p(spectrum[..., :192].reshape(*spectrum.shape[:2], 16, 12).sum(-1))
        hidden = torch.tanh(self.layer1(bands))
        return torch.tanh(self.layer2(hidden))

    def get_embedding_dim(self) -> int:
        return self.width

    def layer_modules(self) -> "OrderedDict[str, nn.Module]":
        return OrderedDict([("layer1", self.layer1), ("layer2", self.layer2)])


def register_tiny(name: str = "tiny_frames_test") -> str:
    register_model(name, ModelSpec(name="tiny_frames",
                                   audio_config=AudioConfig(sample_rate=SAMPLE_RATE, target_length_seconds=1.0)))
    return name


def tones(freqs: list[float], seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """(len(freqs), samples) noisy sine tones at SAMPLE_RATE."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rows = [0.5 * torch.sin(2 * torch.pi * f * t) + 0.05 * torch.randn(t.shape, generator=gen) for f in freqs]
    return torch.stack(rows).float()
