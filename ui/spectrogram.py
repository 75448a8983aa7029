"""Spectrogram images and browser-playable audio for the inference tab (display only, no model maths).

Works at any sample rate: bat and rodent recordings at 250-384 kHz get their full band in the image, and a
10x time-expanded copy for listening (browsers do not play audio above 48 kHz reliably).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
import soundfile as sf
from PIL import Image, ImageDraw, ImageFont

#: only this much of a long recording is drawn / offered for playback
PREVIEW_SECONDS = 60.0
BROWSER_FORMATS = {".wav", ".mp3", ".ogg", ".flac"}
BROWSER_MAX_RATE = 48000
TIME_EXPANSION = 10


def read_preview(path: str | Path, info: Any = None, seconds: float = PREVIEW_SECONDS) -> tuple[np.ndarray, int]:
    """The first ``seconds`` of a recording, mono float32 at its own rate (only that much is decoded).

    ``info``: the file's ``rl_core.audio.audio_info`` when the request has read it already.
    """
    return read_view(path, 0.0, seconds, info)


def read_view(path: str | Path, start_s: float, end_s: float, info: Any = None) -> tuple[np.ndarray, int]:
    """Any part of a recording (``rl_core.audio.read_segment``: seeks, so minute 59 costs what minute 0 does)."""
    from rl_core.audio import read_segment

    return read_segment(path, start_s, end_s, info=info)


def _viridis(n: int = 256) -> np.ndarray:
    from plotly.colors import sample_colorscale, unlabel_rgb

    colours = sample_colorscale("Viridis", [i / (n - 1) for i in range(n)])
    return np.array([unlabel_rgb(c) for c in colours], dtype=np.uint8)


_LUT = None


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=13)


def spectrogram_db(audio: np.ndarray, sr: int, max_frames: int = 1400) -> tuple[np.ndarray, float]:
    """Log-power STFT (freq x time, dB, top 80 dB kept) and the hop in seconds."""
    n_fft = int(2 ** np.ceil(np.log2(max(256, sr * 0.0232))))  # ~23 ms windows at any rate
    hop = max(n_fft // 4, int(np.ceil(len(audio) / max_frames)))
    if len(audio) < n_fft:
        audio = np.pad(audio, (0, n_fft - len(audio)))
    frames = 1 + (len(audio) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    # float32 FFT (scipy): a display needs no float64, and it is a third faster
    spec = scipy.fft.rfft(audio[idx] * np.hanning(n_fft).astype(np.float32)[None, :], axis=1)
    db = 10 * np.log10((spec.real**2 + spec.imag**2).T + 1e-12)
    db = np.clip(db, db.max() - 80.0, None)
    return db, hop / sr


def spectrogram_picture(audio: np.ndarray, sr: int, width: int = 1400, height: int = 260) -> Image.Image:
    """The spectrogram as a bare RGB picture (low frequencies at the bottom), for a plot with real axes."""
    global _LUT
    db, _hop_s = spectrogram_db(audio, sr, max_frames=width)
    if _LUT is None:
        _LUT = _viridis()
    # contrast: the median (mostly background noise) maps to dark, the loudest bin to bright
    lo, hi = float(np.median(db[::2, ::4])), float(db.max())  # a subsample's median is close enough
    levels = np.clip((db[::-1] - lo) * (255.0 / max(hi - lo, 1e-9)), 0.0, 255.0).astype(np.uint8)
    # resized as grey levels and coloured after, by a palette: a third of the time of resizing colours
    grey = Image.fromarray(levels).resize((min(max(levels.shape[1], 400), width), height), Image.BILINEAR)
    picture = Image.frombuffer("P", grey.size, grey.tobytes(), "raw", "P", 0, 1)
    picture.putpalette(_LUT.tobytes())
    return picture.convert("RGB")


def picture_uri(picture: Image.Image) -> str:
    """A JPEG data URI of a picture (plotly would encode a PIL image as PNG: ten times slower, four times larger)."""
    import base64
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=88, subsampling=0)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def playable_segment(audio: np.ndarray, sr: int, out_path: str | Path) -> tuple[str, str]:
    """A WAV of a decoded segment the browser can play (10x time-expanded above 48 kHz) and a caption."""
    out_path = Path(out_path)
    if sr > BROWSER_MAX_RATE:
        sf.write(out_path, audio, max(sr // TIME_EXPANSION, 8000), subtype="PCM_16")
        return str(out_path), (f"{sr / 1000:g} kHz is above what browsers play: slowed {TIME_EXPANSION}x "
                               "(time expansion), so ultrasound becomes audible")
    sf.write(out_path, audio, sr, subtype="PCM_16")
    return str(out_path), ""


def spectrogram_image(path: str | Path, out_path: str | Path, title: str = "",
                      preview: tuple[np.ndarray, int] | None = None) -> Path:
    """Draw the spectrogram of (the start of) a recording as an image with kHz and seconds axes (JPEG, quality 90,
    no chroma subsampling: a tenth of the PNG encoding time and a quarter of its size; ``out_path``'s suffix
    is the caller's).

    ``preview``: ``read_preview(path)`` when the caller has decoded it already.
    """
    audio, sr = preview or read_preview(path)
    plot = spectrogram_picture(audio, sr, width=1400, height=300)

    left, bottom, top = 64, 30, 34
    font = _font()
    canvas = Image.new("RGB", (plot.width + left + 28, plot.height + bottom + top), "white")
    canvas.paste(plot, (left, top))
    draw = ImageDraw.Draw(canvas)
    nyquist_khz = sr / 2000
    for frac in np.linspace(0, 1, 5):
        y = top + plot.height - frac * plot.height
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((4, y - 7), f"{round(frac * nyquist_khz, 1):g} kHz",
                  fill="black", font=font)
    duration = len(audio) / sr
    for frac in np.linspace(0, 1, 6):
        x = left + frac * (plot.width - 1)
        draw.line([(x, top + plot.height), (x, top + plot.height + 4)], fill="black")
        draw.text((x - 10, top + plot.height + 8), f"{frac * duration:.1f} s", fill="black", font=font)
    label = title or Path(path).name
    note = f" (first {PREVIEW_SECONDS:.0f} s)" if duration >= PREVIEW_SECONDS - 1e-6 else ""
    draw.text((left, 6), f"{label} · {sr / 1000:g} kHz{note}", fill="black", font=font)
    out_path = Path(out_path)
    canvas.save(out_path, format="JPEG", quality=90, subsampling=0)
    return out_path


def playable_audio(path: str | Path, out_dir: str | Path, info: Any = None,
                   preview: tuple[np.ndarray, int] | None = None, name: str | None = None) -> tuple[str | None, str]:
    """A file the browser can play and a caption: the original, a WAV copy, or a 10x time-expanded copy.

    ``info``/``preview``: the file's ``audio_info`` and ``read_preview`` when the request has them already;
    ``name``: the name the copy is saved under (default: the file's).
    """
    from rl_core.audio import audio_info

    path = Path(path)
    info = info or audio_info(path)
    if info.decoder == "soundfile" and info.sample_rate <= BROWSER_MAX_RATE and path.suffix.lower() in BROWSER_FORMATS:
        return str(path), "Original recording"
    audio, sr = preview or read_preview(path, info)
    out = Path(out_dir) / f"{Path(name or path.name).stem}_listen.wav"
    if sr > BROWSER_MAX_RATE:
        sf.write(out, audio, max(sr // TIME_EXPANSION, 8000), subtype="PCM_16")
        return str(out), (f"{sr / 1000:g} kHz is above what browsers play: this copy is slowed "
                          f"{TIME_EXPANSION}x (time expansion), so ultrasound becomes audible")
    sf.write(out, audio, sr, subtype="PCM_16")
    return str(out), f"Converted to WAV for the browser (first {PREVIEW_SECONDS:.0f} s at most)"
