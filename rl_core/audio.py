"""Decode, downmix, resample and window recordings.

* Decoding: soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3, aiff, ...) first; librosa/audioread (ffmpeg)
  for what it cannot read (m4a, some mp3s).
* Any channel count is averaged to mono; any sample rate is resampled to the model's with the rule the model's
  reference used (``AudioConfig.resampling``, passed as ``resampling=``):
  ``"kaiser_best"``: librosa's ``kaiser_best`` with ``scale=True`` (the framework's reproducibility rule for the
  ESP models), computed by torchaudio with resampy's filter (same output to <= 4e-5 RMS, 9-35x less CPU);
  ``"fft"``: scipy's FFT ``resample`` of each window on its own, no rescaling (the official BirdNET package's rule);
  ``"polyphase"``: scipy's ``resample_poly``, no rescaling (BatDetect2's rule; resampled block by block).
* Long files are read block by block (float32) and resampled with overlapping context, so a one-hour 48 kHz
  file never sits in memory at once; with ``"kaiser_best"`` the result equals resampling the whole file (to
  float precision).
* Windows (``iter_windows``): ``window_s`` long, one every ``hop_s`` seconds from 0. The last partial window
  rule: after the last whole window, the rest is zero-padded into one more window when it holds at least a
  quarter of a window (``MIN_TAIL_FRACTION``) of audio no earlier window covered; a shorter rest is dropped (it
  would mostly embed silence). A recording shorter than one window gives one zero-padded window. Call detectors
  (BatDetect2) pass ``min_tail_fraction=0``: any rest is a last window, since a call may sit in it.
* ``audio_info`` reads the header once; pass its result (``info=``) on to the readers so they do not read it again.
* A recording whose end is missing (WAV, FLAC, MP3 with a length header, Ogg) is refused with
  ``TruncatedAudioError``, never analysed as a shorter one.
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
    AudioError,
    AudioFileNotFoundError,
    EmptyAudioError,
    InvalidAudioValuesError,
    TruncatedAudioError,
    UnsupportedAudioFormatError,
)
from rl_core.resampling import Resampling, check_resampling, kaiser_best, librosa_end, resample

log = logging.getLogger(__name__)

#: extensions rl_core reads (soundfile natively; m4a/aac/wma through audioread + ffmpeg)
SUPPORTED_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".m4a", ".aac"}
)
_FFMPEG_ONLY = frozenset({".m4a", ".aac"})
BLOCK_SECONDS = 60.0
#: a tail shorter than this fraction of a window (of audio no earlier window covered) gets no window of its own
MIN_TAIL_FRACTION = 0.25



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
    # decoders quote the full path (libsndfile: "Error opening '/tmp/gradio/<hash>/x.wav'"): a web user must see
    # only the name of the file they gave, never the server's folders
    for folder in {str(path.parent), str(path.resolve().parent)}:
        reason = reason.replace(folder + "/", "")
    if reason.endswith(": ") or not reason:  # audioread's NoBackendError carries no text
        reason = "no decoder recognises its content"
    return AudioDecodeError(
        f"{path.name}: cannot decode audio ({reason}). The file may be truncated or not really a "
        f"{path.suffix.lstrip('.').upper() or 'audio'} file; re-export it as WAV or FLAC and try again."
    )


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        if path.exists():  # a directory, /dev/zero, a pipe: there, but not a recording
            raise AudioError(f"{path}: not a regular file (a folder or a device); give an audio file")
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


def _truncated(path: Path, present_s: float, declared_s: float | None) -> TruncatedAudioError:
    """One message for every format: what the file promised, what is there, and how to use the part that is."""
    digits = 1 if declared_s is None or declared_s - present_s >= 0.1 else 3
    promised = (
        f"its header declares {declared_s:.{digits}f} s of audio but only {present_s:.{digits}f} s are present"
        if declared_s is not None
        else f"the stream stops without its end after {present_s:.1f} s"
    )
    return TruncatedAudioError(
        f"{path.name}: the file is truncated: {promised} (copy interrupted or recorder lost power?). To use the "
        f"part that is there, rewrite the file, e.g. `ffmpeg -i {path.name} fixed.wav`, or copy it again."
    )


def _check_wav_complete(path: Path, info: AudioInfo) -> None:
    """Refuse a RIFF/WAV whose data chunk is shorter than its header declares (libsndfile would silently clamp)."""
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
                raise _truncated(path, info.duration_s, size / frame_bytes / info.sample_rate)
            return
        pos += 8 + size + (size & 1)


def _check_ogg_complete(path: Path, frames: int, sample_rate: int) -> None:
    """Refuse an Ogg file (Vorbis, Opus, FLAC-in-Ogg) whose last page is cut or lacks the end-of-stream flag:
    libsndfile counts the frames up to the last whole page, so a cut file would pass for a shorter one."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - (1 << 17)))  # an Ogg page is at most 65,307 bytes
        tail = fh.read()
    pos = tail.rfind(b"OggS")
    if pos < 0 or len(tail) - pos < 27:
        raise _truncated(path, frames / sample_rate, None)
    n_segments = tail[pos + 26]
    page_end = pos + 27 + n_segments + sum(tail[pos + 27 : pos + 27 + n_segments])
    if page_end > len(tail) or not tail[pos + 5] & 0x04:
        raise _truncated(path, frames / sample_rate, None)


#: missing samples at the end tolerated before a file counts as truncated: libsndfile's length estimate of an MP3
#: without a length header can exceed what it decodes by up to a frame (1,152 samples)
_END_TOLERANCE = 2304


def _decodable_until(path: Path) -> int:
    """How many frames decode, front to back, before the data ends (only called for a damaged file)."""
    count = 0
    with sf.SoundFile(str(path)) as fh:
        while True:
            try:
                got = fh.read(fh.samplerate, dtype="float32").shape[0]
            except (sf.LibsndfileError, RuntimeError):
                return count
            count += got
            if got < fh.samplerate:
                return count


def _check_decodes_to_end(path: Path, info: AudioInfo) -> None:
    """Refuse a file whose header promises more frames than decode (FLAC, MP3 with a length header, ...)."""
    probe = min(info.frames, info.sample_rate)
    try:
        with sf.SoundFile(str(path)) as fh:
            fh.seek(info.frames - probe)
            got = fh.read(probe, dtype="float32").shape[0]
    except (sf.LibsndfileError, RuntimeError):
        got = -1
    if got < probe - _END_TOLERANCE:
        raise _truncated(path, _decodable_until(path) / info.sample_rate, info.duration_s)


def _check_complete(path: Path, info: AudioInfo) -> None:
    """One rule for every format soundfile reads: a recording whose end is missing is refused (TruncatedAudioError),
    never analysed silently as a shorter one. Not detectable: an MP3 without a length header (Xing/Info) cut
    between two frames, which is a valid shorter MP3."""
    suffix = path.suffix.lower()
    if suffix in {".wav", ".wave"}:
        _check_wav_complete(path, info)
    elif suffix not in {".ogg", ".oga", ".opus"}:  # Ogg is checked before the frame count (a cut one may read 0)
        _check_decodes_to_end(path, info)


def _sf_audio_info(path: Path) -> AudioInfo:
    info = sf.info(str(path))
    if path.suffix.lower() in {".ogg", ".oga", ".opus"}:
        _check_ogg_complete(path, int(info.frames), int(info.samplerate))
    if info.frames <= 0:
        raise EmptyAudioError(f"{path.name}: the file holds no audio samples")
    result = AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames), info.format)
    _check_complete(path, result)
    return result


def audio_info(path: str | Path) -> AudioInfo:
    """Sample rate, channels and length of a recording, without decoding it all."""
    path = _check_path(path)
    if path.suffix.lower() not in _FFMPEG_ONLY:
        try:
            return _sf_audio_info(path)
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


def _resampled_blocks(
    path: Path, info: AudioInfo, target_sr: int, block_seconds: float, resampling: Resampling
) -> Iterator[np.ndarray]:
    sr = info.sample_rate
    exact = resampling == "kaiser_best" and target_sr != sr  # FIR filter: streamable with context
    # Block length in input frames chosen so that each block maps to a whole number of output samples.
    step = sr // math.gcd(sr, target_sr)
    block_frames = max(step, int(block_seconds * sr) // step * step)
    context = sr if exact else 0
    consumed = 0
    emitted_any = False
    for block, left, right in _iter_native_blocks(path, info, block_frames, context):
        _check_finite(block, path)
        if exact:
            out = kaiser_best(block, sr, target_sr)
            core_in = block.shape[0] - left - right
            # Block starts are multiples of `step`, so input [consumed, consumed + core_in) starts at the whole
            # output sample consumed * target / sr; the block that ends the file gets librosa's length.
            first = consumed * target_sr // sr
            out = out[left * target_sr // sr :]
            consumed += core_in
            if right == 0:  # only the block that ends the file has no right context
                out = librosa_end(out, consumed, first, sr, target_sr)
            else:
                out = out[: consumed * target_sr // sr - first]
        else:
            out = resample(block, sr, target_sr, resampling)
        if out.size:
            emitted_any = True
            yield out
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


def _opened(path: str | Path, info: AudioInfo | None) -> tuple[Path, AudioInfo]:
    """The checked path and its header (read now unless the caller passes it)."""
    if info is None:
        path = _check_path(path)
        return path, audio_info(path)
    return Path(path), info


def iter_audio_blocks(
    path: str | Path,
    target_sr: int | None = None,
    block_seconds: float = BLOCK_SECONDS,
    resampling: Resampling = "kaiser_best",
    info: AudioInfo | None = None,
) -> Iterator[np.ndarray]:
    """Mono float32 blocks of the recording at ``target_sr`` (native rate when None), in order.

    With ``"kaiser_best"`` blocks are resampled with one second of context on each side, trimmed afterwards, so
    concatenating the blocks equals resampling the whole file. An FFT resample sees its input as one period, so
    with ``"fft"`` each block is resampled on its own and the result depends on ``block_seconds``.
    ``info``: the file's ``audio_info`` when the caller has it already.
    """
    path, info = _opened(path, info)
    yield from _resampled_blocks(path, info, target_sr or info.sample_rate, block_seconds, resampling)


def load_audio(
    path: str | Path, target_sr: int | None = None, resampling: Resampling = "kaiser_best",
    info: AudioInfo | None = None,
) -> tuple[np.ndarray, int]:
    """The whole recording as mono float32 at ``target_sr`` (native when None); ``"fft"`` resamples it at once."""
    path, info = _opened(path, info)
    sr = target_sr or info.sample_rate
    if resampling == "fft" and sr != info.sample_rate:
        native = np.concatenate(list(_resampled_blocks(path, info, info.sample_rate, BLOCK_SECONDS, resampling)))
        return resample(native, info.sample_rate, sr, resampling), sr
    return np.concatenate(list(_resampled_blocks(path, info, sr, BLOCK_SECONDS, resampling))), sr


def _window_sizes(sample_rate: int, window_s: float, hop_s: float | None) -> tuple[int, int]:
    hop_s = window_s if hop_s is None else hop_s
    if not (hop_s > 0 and window_s > 0 and math.isfinite(hop_s)):
        raise ValueError("window_s and hop_s must be positive")
    return int(round(window_s * sample_rate)), max(1, int(round(hop_s * sample_rate)))


def _keeps_tail(total: int, next_start: int, hop: int, win: int, min_tail_fraction: float = MIN_TAIL_FRACTION) -> bool:
    """The last partial window rule (module docstring): does the rest from ``next_start`` get a window?"""
    if next_start == 0:
        return total > 0  # shorter than one window: one padded window
    covered_until = next_start - hop + win
    fresh = total - max(covered_until, next_start)
    return fresh > 0 and fresh >= min_tail_fraction * win


def count_windows(num_samples: int, target_sr: int, window_s: float, hop_s: float | None = None,
                  min_tail_fraction: float = MIN_TAIL_FRACTION) -> int:
    """How many windows ``iter_windows`` gives for ``num_samples`` samples at ``target_sr`` (without decoding)."""
    win, hop = _window_sizes(target_sr, window_s, hop_s)
    full = 0 if num_samples < win else (num_samples - win) // hop + 1
    return full + int(_keeps_tail(num_samples, full * hop, hop, win, min_tail_fraction))


def _slide(blocks: Iterable[np.ndarray], sample_rate: int, window_s: float, hop_s: float | None,
           min_tail_fraction: float = MIN_TAIL_FRACTION) -> Iterator[tuple[float, np.ndarray]]:
    """``(start_s, window)`` every ``hop_s`` over a block stream at ``sample_rate``; the last window may be short
    (the last partial window rule decides whether it comes at all)."""
    win, hop = _window_sizes(sample_rate, window_s, hop_s)
    buffer = np.zeros(0, dtype=np.float32)
    offset = 0  # absolute sample index of buffer[0]
    next_start = 0
    total = 0
    for block in blocks:
        buffer = np.concatenate([buffer, block]) if buffer.size else block
        total += block.shape[0]
        while next_start + win <= offset + buffer.shape[0]:
            rel = next_start - offset
            yield next_start / sample_rate, buffer[rel : rel + win].copy()
            next_start += hop
        drop = max(0, next_start - offset)
        buffer = buffer[drop:]
        offset += drop
    if next_start < total and _keeps_tail(total, next_start, hop, win, min_tail_fraction):
        yield next_start / sample_rate, buffer[next_start - offset :].copy()


def _padded(window: np.ndarray, win: int) -> np.ndarray:
    return window if window.shape[0] == win else np.pad(window, (0, win - window.shape[0]))


def _fft_windows(native_blocks: Iterable[np.ndarray], sample_rate: int, target_sr: int, window_s: float,
                 hop_s: float | None, min_tail_fraction: float) -> Iterator[tuple[float, np.ndarray]]:
    """Windows cut at the native rate, each resampled alone and padded (the official BirdNET package's rule)."""
    win = int(round(window_s * target_sr))
    for start_s, segment in _slide(native_blocks, sample_rate, window_s, hop_s, min_tail_fraction):
        yield start_s, _padded(resample(segment, sample_rate, target_sr, "fft")[:win], win)


def windows_of_blocks(
    blocks: Iterable[np.ndarray], target_sr: int, window_s: float, hop_s: float | None = None,
    min_tail_fraction: float = MIN_TAIL_FRACTION,
) -> Iterator[tuple[float, np.ndarray]]:
    """``iter_windows`` over consecutive mono blocks already at ``target_sr``."""
    win, _ = _window_sizes(target_sr, window_s, hop_s)
    for start_s, window in _slide(blocks, target_sr, window_s, hop_s, min_tail_fraction):
        yield start_s, _padded(window, win)


def windows_of_array(
    audio: np.ndarray, sample_rate: int, target_sr: int, window_s: float, hop_s: float | None = None,
    resampling: Resampling = "kaiser_best", min_tail_fraction: float = MIN_TAIL_FRACTION,
) -> Iterator[tuple[float, np.ndarray]]:
    """``iter_windows`` over mono audio held in memory at ``sample_rate`` (e.g. a segment of a dataset file)."""
    check_resampling(resampling)
    if resampling == "fft" and sample_rate != target_sr:
        return _fft_windows([audio], sample_rate, target_sr, window_s, hop_s, min_tail_fraction)
    return windows_of_blocks([resample(audio, sample_rate, target_sr, resampling)], target_sr, window_s, hop_s,
                             min_tail_fraction)


def iter_windows(
    path: str | Path,
    target_sr: int,
    window_s: float,
    hop_s: float | None = None,
    resampling: Resampling = "kaiser_best",
    info: AudioInfo | None = None,
    min_tail_fraction: float = MIN_TAIL_FRACTION,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(start_s, window)`` of ``window_s`` seconds every ``hop_s`` seconds at ``target_sr``.

    The last partial window follows the rule in the module docstring (``MIN_TAIL_FRACTION``).
    ``"kaiser_best"`` windows are cut from the resampled stream; ``"fft"`` windows are cut at the native rate
    and each is resampled on its own, then padded, as the official BirdNET package does with its 3-s segments.
    """
    _window_sizes(target_sr, window_s, hop_s)
    check_resampling(resampling)
    path, info = _opened(path, info)
    sr = info.sample_rate
    if resampling == "fft" and sr != target_sr:
        return _fft_windows(_resampled_blocks(path, info, sr, BLOCK_SECONDS, resampling), sr, target_sr, window_s,
                            hop_s, min_tail_fraction)
    return windows_of_blocks(_resampled_blocks(path, info, target_sr, BLOCK_SECONDS, resampling), target_sr,
                             window_s, hop_s, min_tail_fraction)
