"""Resampling rules of the models' references (``AudioConfig.resampling``), applied by ``rl_core.audio``.

* ``"kaiser_best"``: librosa's ``kaiser_best`` with ``scale=True`` (the framework's rule for the ESP models),
  computed by torchaudio with resampy's filter and librosa's output length (same output to <= 4e-5 RMS, 9-35x
  less CPU; bench/RESULTS.md);
* ``"fft"``: scipy's FFT ``resample``, no rescaling (the official BirdNET package, per 3-s window);
* ``"polyphase"``: scipy's ``resample_poly``, no rescaling (BatDetect2).
"""

from __future__ import annotations

import functools
import math
from typing import Literal, get_args

import numpy as np

Resampling = Literal["kaiser_best", "fft", "polyphase"]
RESAMPLING_METHODS: tuple[str, ...] = get_args(Resampling)
#: librosa's ``res_type="kaiser_best"`` is resampy's precomputed ``kaiser_best`` filter (resampy 0.4.3): a
#: Kaiser-windowed sinc over 50 zero crossings, roll-off 0.9173473712608761, beta 12.98458611761796 (fitted to the
#: table to 3e-8). torchaudio counts its width in zero crossings after the roll-off, hence 50 * roll-off.
_KAISER_BEST_ROLLOFF = 0.9173473712608761
_KAISER_BEST = {
    "resampling_method": "sinc_interp_kaiser",
    "lowpass_filter_width": 50 * _KAISER_BEST_ROLLOFF,
    "rolloff": _KAISER_BEST_ROLLOFF,
    "beta": 12.98458611761796,
}
#: above this many kernel elements (coprime rates), resample with librosa instead of torchaudio
_MAX_KERNEL_ELEMENTS = 4_000_000


def _kaiser_best_kernel_size(orig_sr: int, target_sr: int) -> int:
    """Elements of torchaudio's polyphase kernel for this rate pair (new * (2 * width + orig), reduced rates)."""
    g = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // g, target_sr // g
    width = math.ceil(_KAISER_BEST["lowpass_filter_width"] * orig / (min(orig, new) * _KAISER_BEST["rolloff"]))
    return new * (2 * width + orig)


@functools.lru_cache(maxsize=8)
def _kaiser_best_resampler(orig_sr: int, target_sr: int):
    import torchaudio

    return torchaudio.transforms.Resample(orig_sr, target_sr, **_KAISER_BEST)


def _librosa_length(n: int, orig_sr: int, target_sr: int) -> tuple[int, int]:
    """(computed samples, returned samples) of librosa's kaiser_best on ``n`` samples: resampy computes
    ``int(n * new / orig)`` samples and librosa pads them with zeros to ``ceil(n * (new / orig))``."""
    return int(n * float(target_sr) / float(orig_sr)), int(np.ceil(n * (float(target_sr) / orig_sr)))


def kaiser_best(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """kaiser_best with scale=True, ``ceil(n * target_sr / orig_sr)`` samples (exact rational length)."""
    scale = np.float32(1.0 / math.sqrt(target_sr / orig_sr))  # librosa's scale=True
    if _kaiser_best_kernel_size(orig_sr, target_sr) > _MAX_KERNEL_ELEMENTS:
        import librosa  # coprime rates (e.g. 44100 -> 16001 Hz): a polyphase kernel would not fit; same filter

        out = librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type="kaiser_best", scale=False)
    else:
        import torch

        with torch.inference_mode():
            out = _kaiser_best_resampler(orig_sr, target_sr)(torch.from_numpy(np.ascontiguousarray(audio))).numpy()
    return (out * scale).astype(np.float32, copy=False)


def librosa_end(out: np.ndarray, n_in: int, first_out: int, orig_sr: int, target_sr: int) -> np.ndarray:
    """Give the output that ends the recording (``n_in`` input samples in all; ``out`` starts at output sample
    ``first_out``) librosa's length, zeros included."""
    computed, length = _librosa_length(n_in, orig_sr, target_sr)
    out = out[: length - first_out]
    if out.shape[0] < length - first_out:
        out = np.pad(out, (0, length - first_out - out.shape[0]))
    out[max(0, computed - first_out) :] = 0.0
    return out


def fft_resample(audio: np.ndarray, num: int) -> np.ndarray:
    """``scipy.signal.resample(audio, num)`` of real mono float32 audio, step for step (the same float32 FFTs, so
    the same output to the bit; tests/test_audio.py), without importing ``scipy.signal``, which takes 1-2 s and
    ~40 MB in every worker process (it imports scipy.stats)."""
    from scipy import fft as sp_fft

    n_x = audio.shape[-1]
    s_fac = n_x / num
    m = min(num, n_x)
    spectrum = sp_fft.rfft(audio)[..., : m // 2 + 1]
    if m % 2 == 0 and num != n_x:  # the unpaired bin at m // 2
        spectrum[..., m // 2] *= 2 if num < n_x else 0.5
    return sp_fft.irfft(spectrum / s_fac, n=num, overwrite_x=True).astype(np.float32, copy=False)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int, resampling: Resampling = "kaiser_best") -> np.ndarray:
    """Resample mono float32 ``audio`` from ``orig_sr`` to ``target_sr`` Hz with a model's rule.

    * ``"kaiser_best"``: librosa's ``res_type="kaiser_best", scale=True`` (the ESP rule), computed as one strided
      convolution by torchaudio, with librosa's output length.
    * ``"fft"``: ``scipy.signal.resample`` to ``round(n / orig_sr * target_sr)`` samples, no rescaling (the
      official BirdNET package's rule, which it applies to each 3-s segment).
    * ``"polyphase"``: librosa's ``res_type="polyphase"``, ``scale=False`` (``scipy.signal.resample_poly``; the
      official BatDetect2 package's rule).
    """
    if resampling not in RESAMPLING_METHODS:
        raise ValueError(f"unknown resampling {resampling!r}; use one of {', '.join(RESAMPLING_METHODS)}")
    audio = audio.astype(np.float32, copy=False)
    if orig_sr == target_sr:
        return audio
    if resampling == "polyphase":  # librosa's res_type="polyphase", scale=False: scipy's resample_poly
        from scipy.signal import resample_poly

        g = math.gcd(orig_sr, target_sr)
        return resample_poly(audio, target_sr // g, orig_sr // g).astype(np.float32, copy=False)
    if resampling == "fft":
        return fft_resample(audio, max(1, round(audio.shape[0] / orig_sr * target_sr)))
    return librosa_end(kaiser_best(audio, orig_sr, target_sr), audio.shape[0], 0, orig_sr, target_sr)


def check_resampling(resampling: str) -> None:
    if resampling not in RESAMPLING_METHODS:
        raise ValueError(f"unknown resampling {resampling!r}; use one of {', '.join(RESAMPLING_METHODS)}")
