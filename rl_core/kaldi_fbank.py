"""Batched Kaldi-style log-mel filterbank, equal to ``torchaudio.compliance.kaldi.fbank``.

``torchaudio.compliance.kaldi.fbank`` takes one waveform at a time and rebuilds its window and mel matrix on
every call. Spectrogram transformers (EAT, Bird-MAE, BEATs) were trained on its output, so their front ends
must reproduce it; this module does the same arithmetic for a whole (B, samples) batch at once, on whatever
device the module lives on, with the window and mel matrix built once as (non-persistent) buffers.

The steps follow Kaldi's ``compute-fbank-feats`` as implemented by torchaudio, for the options the models use
(``snip_edges=True``, no dither, ``use_energy=False``, power spectrum, log of mel energies):

1. frames of ``frame_length`` ms every ``frame_shift`` ms, only whole frames (snip edges);
2. per frame: remove the frame's mean (DC offset), pre-emphasis ``x[t] - 0.97 * x[t-1]`` with ``x[-1] = x[0]``,
   multiply by the window, zero-pad to the next power of two;
3. ``|rfft|**2``, times the Kaldi mel matrix (``torchaudio.compliance.kaldi.get_mel_banks``, low 20 Hz, high =
   Nyquist), ``log(max(energy, float32 eps))``.

``htk_compat`` only changes where the energy coefficient goes, and no model here uses energy, so it needs no
code. ``tests/test_eat.py`` checks the result against torchaudio to 1e-4.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchaudio.compliance import kaldi

from rl_core.errors import ConfigError

_WINDOWS = ("hanning", "povey", "hamming", "rectangular")


def _kaldi_window(kind: str, size: int) -> torch.Tensor:
    """Kaldi's symmetric (not periodic) analysis windows."""
    if kind == "hanning":
        return torch.hann_window(size, periodic=False)
    if kind == "povey":
        return torch.hann_window(size, periodic=False).pow(0.85)
    if kind == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46)
    if kind == "rectangular":
        return torch.ones(size)
    raise ConfigError(f"unknown Kaldi window '{kind}': use one of {', '.join(_WINDOWS)}")


class KaldiFbank(nn.Module):
    """(B, samples) float waveform -> (B, frames, num_mel_bins) log-mel energies, Kaldi-compatible."""

    def __init__(
        self,
        sample_rate: int,
        num_mel_bins: int = 128,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        window_type: str = "povey",
        preemphasis: float = 0.97,
        remove_dc_offset: bool = True,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        persistent_buffers: bool = False,
    ) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.window_size = int(sample_rate * frame_length_ms * 0.001)
        self.window_shift = int(sample_rate * frame_shift_ms * 0.001)
        self.padded_size = 1 << math.ceil(math.log2(self.window_size))  # Kaldi's round_to_power_of_two
        self.preemphasis = float(preemphasis)
        self.remove_dc_offset = bool(remove_dc_offset)
        self.num_mel_bins = int(num_mel_bins)
        mel, _ = kaldi.get_mel_banks(
            num_mel_bins, self.padded_size, float(sample_rate), low_freq, high_freq, 100.0, -500.0, 1.0
        )
        # Kaldi's matrix has padded_size / 2 columns; the rfft has one more bin (Nyquist), which gets weight 0.
        mel = nn.functional.pad(mel, (0, 1))
        # Buffers follow .to(device). They stay out of state_dict unless a family's checkpoints carry them
        # (``persistent_buffers``: BEATs' ESP files store ``window`` and ``mel_fb``).
        self.register_buffer("window", _kaldi_window(window_type, self.window_size), persistent=persistent_buffers)
        self.register_buffer("mel_fb", mel.T.contiguous(), persistent=persistent_buffers)

    def num_frames(self, num_samples: int) -> int:
        if num_samples < self.window_size:
            return 0
        return 1 + (num_samples - self.window_size) // self.window_shift

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.ndim != 2:
            raise ValueError(f"KaldiFbank expects (batch, samples), got shape {tuple(waveform.shape)}")
        if waveform.shape[-1] < self.window_size:
            raise ValueError(
                f"need at least {self.window_size} samples ({self.window_size / self.sample_rate * 1000:.0f} ms) "
                f"for one frame, got {waveform.shape[-1]}"
            )
        frames = waveform.unfold(-1, self.window_size, self.window_shift)  # (B, F, W), a view
        if self.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if self.preemphasis != 0.0:
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = frames - self.preemphasis * previous
        frames = frames * self.window
        spectrum = torch.fft.rfft(frames, n=self.padded_size).abs().pow(2.0)  # rfft zero-pads to padded_size
        energies = spectrum @ self.mel_fb
        return torch.clamp_min(energies, torch.finfo(energies.dtype).eps).log()
