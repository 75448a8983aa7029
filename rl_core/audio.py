"""Decode, downmix, resample and window recordings.

* Decoding: soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3, aiff, ...) first; librosa/audioread (ffmpeg)
  for what it cannot read (m4a, some mp3s).
* Any channel count is averaged to mono; any sample rate is resampled to the model's with
  ``librosa.resample(res_type="kaiser_best", scale=True)`` (the framework's reproducibility rule).
* Long files are read block by block (float32) and resampled with overlapping context, so a one-hour 48 kHz
  file never sits in memory at once; the result equals resampling the whole file (to float precision).
* Windows (``iter_windows``): ``window_s`` long, one every ``hop_s`` seconds from 0. The last partial window
  rule: after the last whole window, the rest is zero-padded into one more window when it holds at least a
  quarter of a window (``MIN_TAIL_FRACTION``) of audio no earlier window covered; a shorter rest is dropped (it
  would mostly embed silence). A recording shorter than one window gives one zero-padded window.
* ``audio_info`` reads the header once; pass its result (``info=``) on to the readers so they do not read it again.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import soundfile as sf

from rl_core.errors import (
    AudioDecodeError,
    AudioFileNotFoundError,
    EmptyAudioError,
    InvalidAudioValuesError,
    TruncatedAudioError,
    UnsupportedAudioFormatError,
)

log = logging.getLogger(__name__)

#: extensions rl_core reads (soundfile natively; m4a/aac/wma through audioread + ffmpeg)
SUPPORTED_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".m4a", ".aac"}
)
_FFMPEG_ONLY = frozenset({".m4a", ".aac"})
BLOCK_SECONDS = 60.0
#: a tail shorter than this fraction of a window (of audio no earlier window covered) gets no window of its own
MIN_TAIL_FRACTION = 0.25
RESAMPLE_TYPE = "kaiser_best"


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    #: "soundfile" or "audioread" (formats libsndfile cannot read, decoded whole through ffmpeg)
    decoder: str = "soundfile"

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _bad_file(path: Path, reason: str) -> AudioDecodeError:
    return AudioDecodeError(
        f"{path.name}: cannot decode audio ({reason}). The file may be truncated or not really a "
        f"{path.suffix.lstrip('.').upper() or 'audio'} file; re-export it as WAV or FLAC and try again."
    )


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AudioFileNotFoundError(f"{path}: file not found")
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise UnsupportedAudioFormatError(
            f"{path.name}: '{path.suffix or '(no extension)'}' is not a supported audio format. "
            f"Supported: {', '.join(sorted(SUPPORTED_EXTENSIONS))}"
        )
    if path.stat().st_size == 0:
        raise EmptyAudioError(f"{path.name}: the file is empty (0 bytes)")
    return path


def _decode_with_librosa(path: Path) -> tuple[np.ndarray, int]:
    """Fallback decoder (audioread/ffmpeg): whole file, mono float32."""
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():  # librosa warns that it falls back to audioread: that is the intent
            warnings.simplefilter("ignore")
            data, sr = librosa.load(str(path), sr=None, mono=True, dtype=np.float32)
    except Exception as err:  # audioread raises a zoo of backend-specific errors
        raise _bad_file(path, f"{type(err).__name__}: {err}") from None
    return data, int(sr)


def _check_wav_complete(path: Path, info: AudioInfo) -> None:
    """Refuse a RIFF/WAV whose data chunk is shorter than its header declares (libsndfile would silently clamp)."""
    if path.suffix.lower() not in {".wav", ".wave"}:
        return
    with open(path, "rb") as fh:
        header = fh.read(1 << 16)
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(header):
        chunk_id, size = header[pos:pos + 4], int.from_bytes(header[pos + 4:pos + 8], "little")
        if chunk_id == b"data":
            if size in (0, 0xFFFFFFFF):
                return  # streaming writers leave the size unset; nothing to compare against
            present = path.stat().st_size - (pos + 8)
            if present < size:
                # libsndfile clamps `frames` to what is present, so present bytes / frames is the frame size
                frame_bytes = present / info.frames if info.frames else 1
                declared_s = size / frame_bytes / info.sample_rate
                raise TruncatedAudioError(
                    f"{path.name}: the file is truncated: its header declares {declared_s:.1f} s of audio but only "
                    f"{info.duration_s:.1f} s are present (copy interrupted or recorder lost power?). To use the part "
                    f"that is there, rewrite the file, e.g. `ffmpeg -i {path.name} fixed.wav`, or copy it again."
                )
            return
        pos += 8 + size + (size & 1)


def audio_info(path: str | Path) -> AudioInfo:
    """Sample rate, channels and length of a recording, without decoding it all."""
    path = _check_path(path)
    if path.suffix.lower() not in _FFMPEG_ONLY:
        try:
            info = sf.info(str(path))
            if info.frames <= 0:
                raise EmptyAudioError(f"{path.name}: the file holds no audio samples")
            result = AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames), info.format)
            _check_wav_complete(path, result)
            return result
        except sf.LibsndfileError as err:
            log.debug("soundfile cannot read %s (%s); trying audioread", path, err)
            if path.suffix.lower() in {".wav", ".wave", ".flac", ".aif", ".aiff"}:
                raise _bad_file(path, str(err)) from None
    # audioread reads the header (rate, channels, duration) without decoding; the blocks decode later, once.
    import audioread

    try:
        with audioread.audio_open(str(path)) as reader:
            sr, channels, duration = int(reader.samplerate), int(reader.channels), float(reader.duration)
    except Exception as err:  # audioread raises backend-specific errors
        raise _bad_file(path, f"{type(err).__name__}: {err}") from None
    frames = int(round(duration * sr))
    if frames <= 0:
        raise EmptyAudioError(f"{path.name}: the file holds no audio samples")
    return AudioInfo(path, sr, channels, frames, path.suffix.lstrip(".").upper(), decoder="audioread")


def _to_mono(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block.astype(np.float32, copy=False)


def _check_finite(block: np.ndarray, path: Path) -> None:
    if not np.isfinite(block).all():
        raise InvalidAudioValuesError(
            f"{path.name}: the recording contains NaN or infinite sample values; re-export it (e.g. as 16-bit WAV)"
        )


def _iter_native_blocks(path: Path, info: AudioInfo, block_frames: int, context: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """Yield (mono float32 block with context, left context used, right context used) at the native rate."""
    if info.decoder == "audioread":
        data, _ = _decode_with_librosa(path)
        for start in range(0, data.shape[0], block_frames):
            lo = max(0, start - context)
            hi = min(data.shape[0], start + block_frames + context)
            yield data[lo:hi], start - lo, hi - min(data.shape[0], start + block_frames)
        return
    try:
        with sf.SoundFile(str(path)) as fh:
            total = fh.frames
            for start in range(0, total, block_frames):
                lo = max(0, start - context)
                end = min(total, start + block_frames)
                hi = min(total, end + context)
                fh.seek(lo)
                block = fh.read(hi - lo, dtype="float32", always_2d=True)
                if block.shape[0] < hi - lo:
                    if block.shape[0] <= start - lo:
                        break  # header promised more frames than the file holds (truncated)
                    hi = lo + block.shape[0]
                    end = min(end, hi)
                yield _to_mono(block), start - lo, hi - end
    except sf.LibsndfileError as err:
        raise _bad_file(path, str(err)) from None


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """librosa kaiser_best resampling with scale=True (the framework's rule)."""
    if orig_sr == target_sr:
        return audio.astype(np.float32, copy=False)
    import librosa

    return librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type=RESAMPLE_TYPE, scale=True).astype(
        np.float32, copy=False
    )


def iter_audio_blocks(
    path: str | Path, target_sr: int | None = None, block_seconds: float = BLOCK_SECONDS, info: AudioInfo | None = None
) -> Iterator[np.ndarray]:
    """Mono float32 blocks of the recording at ``target_sr`` (native rate when None), in order.

    Blocks are resampled with one second of context on each side, trimmed afterwards, so concatenating the
    blocks equals resampling the whole file. ``info``: the file's ``audio_info`` when the caller has it already.
    """
    if info is None:
        path = _check_path(path)
        info = audio_info(path)
    path = Path(path)
    sr = info.sample_rate
    target_sr = target_sr or sr
    # Block length in input frames chosen so that each block maps to a whole number of output samples.
    step = sr // math.gcd(sr, target_sr)
    block_frames = max(step, int(block_seconds * sr) // step * step)
    context = sr if target_sr != sr else 0
    consumed = 0
    emitted_any = False
    for block, left, right in _iter_native_blocks(path, info, block_frames, context):
        _check_finite(block, path)
        out = resample(block, sr, target_sr)
        ratio = target_sr / sr
        core_in = block.shape[0] - left - right
        # Input [consumed, consumed + core_in) maps to output [consumed*ratio, ceil(end*ratio)), as librosa
        # sizes a whole-file resample with ceil(); block starts are multiples of `step`, so consumed*ratio is whole.
        lo = int(round(left * ratio))
        n_out = math.ceil((consumed + core_in) * ratio - 1e-9) - int(round(consumed * ratio))
        chunk = out[lo : lo + n_out]
        consumed += core_in
        if chunk.size:
            emitted_any = True
            yield chunk
    if not emitted_any:
        raise EmptyAudioError(f"{path.name}: the file holds no audio samples")


def read_segment(path: str | Path, start_s: float, end_s: float, info: AudioInfo | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples from ``start_s`` to ``end_s`` at the native rate (clipped to the recording).

    soundfile formats seek straight to the segment, so minute 59 of an hour costs what minute 0 does.
    """
    path = Path(path)
    info = info or audio_info(path)
    sr = info.sample_rate
    lo = min(max(0, int(round(start_s * sr))), info.frames)
    hi = min(max(lo, int(round(end_s * sr))), info.frames)
    if info.decoder == "audioread":
        data, _ = _decode_with_librosa(path)
        return data[lo:hi].astype(np.float32, copy=False), sr
    try:
        with sf.SoundFile(str(path)) as fh:
            fh.seek(lo)
            block = fh.read(hi - lo, dtype="float32", always_2d=True)
    except sf.LibsndfileError as err:
        raise _bad_file(path, str(err)) from None
    block = _to_mono(block)
    _check_finite(block, path)
    return block, sr


def load_audio(path: str | Path, target_sr: int | None = None) -> tuple[np.ndarray, int]:
    """The whole recording as mono float32 at ``target_sr`` (native when None)."""
    sr = target_sr or audio_info(path).sample_rate
    return np.concatenate(list(iter_audio_blocks(path, sr))), sr


def _window_sizes(target_sr: int, window_s: float, hop_s: float | None) -> tuple[int, int]:
    hop_s = window_s if hop_s is None else hop_s
    if not (hop_s > 0 and window_s > 0 and math.isfinite(hop_s)):
        raise ValueError("window_s and hop_s must be positive")
    return int(round(window_s * target_sr)), max(1, int(round(hop_s * target_sr)))


def _keeps_tail(total: int, next_start: int, hop: int, win: int) -> bool:
    """The last partial window rule (module docstring): does the rest from ``next_start`` get a window?"""
    if next_start == 0:
        return total > 0  # shorter than one window: one padded window
    covered_until = next_start - hop + win
    fresh = total - max(covered_until, next_start)
    return fresh > 0 and fresh >= MIN_TAIL_FRACTION * win


def count_windows(num_samples: int, target_sr: int, window_s: float, hop_s: float | None = None) -> int:
    """How many windows ``iter_windows`` gives for ``num_samples`` samples at ``target_sr`` (without decoding)."""
    win, hop = _window_sizes(target_sr, window_s, hop_s)
    full = 0 if num_samples < win else (num_samples - win) // hop + 1
    return full + int(_keeps_tail(num_samples, full * hop, hop, win))


def iter_windows(
    path: str | Path, target_sr: int, window_s: float, hop_s: float | None = None, info: AudioInfo | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(start_s, window)`` of ``window_s`` seconds every ``hop_s`` seconds at ``target_sr``.

    The last partial window follows the rule in the module docstring (``MIN_TAIL_FRACTION``).
    """
    return windows_of_blocks(iter_audio_blocks(path, target_sr, info=info), target_sr, window_s, hop_s)


def windows_of_blocks(
    blocks: Iterable[np.ndarray], target_sr: int, window_s: float, hop_s: float | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """``iter_windows`` over consecutive mono blocks already at ``target_sr`` (e.g. ``[audio]`` held in memory)."""
    win, hop = _window_sizes(target_sr, window_s, hop_s)
    buffer = np.zeros(0, dtype=np.float32)
    offset = 0  # absolute sample index of buffer[0]
    next_start = 0
    total = 0
    for block in blocks:
        buffer = np.concatenate([buffer, block]) if buffer.size else block
        total += block.shape[0]
        while next_start + win <= offset + buffer.shape[0]:
            rel = next_start - offset
            yield next_start / target_sr, buffer[rel : rel + win].copy()
            next_start += hop
        drop = max(0, next_start - offset)
        buffer = buffer[drop:]
        offset += drop
    if next_start < total and _keeps_tail(total, next_start, hop, win):
        rel = next_start - offset
        tail = buffer[rel:]
        yield next_start / target_sr, np.pad(tail, (0, win - tail.shape[0]))
