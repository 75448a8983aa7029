"""Decoding, resampling, windowing and every kind of bad recording."""

from __future__ import annotations

import subprocess
import shutil

import librosa
import numpy as np
import pytest
import soundfile as sf

from rl_core.audio import audio_info, iter_windows, load_audio
from rl_core.errors import (
    AudioDecodeError,
    AudioFileNotFoundError,
    EmptyAudioError,
    InvalidAudioValuesError,
    TruncatedAudioError,
    UnsupportedAudioFormatError,
)


def _tone(sr: int, seconds: float, freq: float = 1000.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    mono = (0.25 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1)


@pytest.mark.parametrize("fmt,subtype", [("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")])
def test_decodes_common_formats(tmp_path, fmt, subtype):
    path = tmp_path / f"tone.{fmt}"
    sf.write(path, _tone(22050, 2.0), 22050, format=fmt.upper() if fmt != "mp3" else "MP3", subtype=subtype)
    audio, sr = load_audio(path, 16000)
    assert sr == 16000 and abs(audio.shape[0] - 32000) < 1200  # mp3 adds encoder delay/padding
    spectrum = np.abs(np.fft.rfft(audio[2000:14000]))
    assert abs(np.argmax(spectrum) * 16000 / 12000 - 1000) < 10  # the tone survives decoding + resampling


def test_resampling_matches_librosa_kaiser_best_whole_file(tmp_path):
    path = tmp_path / "long.wav"
    x = np.random.default_rng(0).standard_normal(44100 * 70).astype(np.float32) * 0.1  # > one 60-s block
    sf.write(path, x, 44100, subtype="FLOAT")
    audio, _ = load_audio(path, 16000)
    ref = librosa.resample(x, orig_sr=44100, target_sr=16000, res_type="kaiser_best", scale=True)
    assert audio.shape == ref.shape
    assert np.abs(audio - ref).max() < 1e-4


def test_six_channels_become_mono(tmp_path):
    path = tmp_path / "six.wav"
    sf.write(path, _tone(16000, 1.0, channels=6), 16000)
    info = audio_info(path)
    assert info.channels == 6
    audio, _ = load_audio(path, 16000)
    expected = _tone(16000, 1.0, channels=6).mean(axis=1)
    np.testing.assert_allclose(audio, expected, atol=1e-4)


@pytest.mark.parametrize("sr", [8000, 384000])
def test_extreme_sample_rates(tmp_path, sr):
    path = tmp_path / f"sr{sr}.wav"
    sf.write(path, _tone(sr, 0.5, freq=2000), sr)
    audio, out_sr = load_audio(path, 48000)
    assert out_sr == 48000 and abs(audio.shape[0] - 24000) <= 1
    windows = list(iter_windows(path, 48000, 3.0))
    assert len(windows) == 1 and windows[0][1].shape == (144000,)


def test_one_millisecond_clip_is_padded(tmp_path):
    path = tmp_path / "click.wav"
    sf.write(path, np.ones(48, np.float32) * 0.5, 48000)
    (start, window), = list(iter_windows(path, 48000, 3.0))
    assert start == 0.0 and window.shape == (144000,)
    assert np.allclose(window[:48], 0.5, atol=1e-4) and not window[48:].any()


def test_windows_with_hop_cover_file(tmp_path):
    path = tmp_path / "ten.wav"
    sf.write(path, _tone(48000, 10.0), 48000)
    starts = [s for s, _ in iter_windows(path, 48000, 3.0, hop_s=1.5)]
    assert starts == [0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0] or starts == [0.0, 1.5, 3.0, 4.5, 6.0, 7.5]
    assert starts[-1] + 3.0 >= 9.0


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(EmptyAudioError, match="empty.wav: the file is empty"):
        audio_info(path)


def test_zero_samples(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(EmptyAudioError, match="no audio samples"):
        load_audio(path)


def test_truncated_wav(tmp_path):
    full = tmp_path / "full.wav"
    sf.write(full, _tone(16000, 2.0), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 16000])
    with pytest.raises(TruncatedAudioError, match="cut.wav: the file is truncated.*2.0 s.*0.5 s"):
        load_audio(cut)


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are my field notes, not audio\n" * 20)
    with pytest.raises(AudioDecodeError, match="notes.wav: cannot decode audio"):
        load_audio(path)


def test_unknown_extension(tmp_path):
    path = tmp_path / "data.xyz"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(UnsupportedAudioFormatError, match="'.xyz' is not a supported audio format"):
        audio_info(path)


def test_missing_file(tmp_path):
    with pytest.raises(AudioFileNotFoundError):
        audio_info(tmp_path / "nope.wav")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_samples(tmp_path, bad):
    x = _tone(16000, 1.0)
    x[100] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(InvalidAudioValuesError, match="NaN or infinite"):
        load_audio(path)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (.ci/run installs it)")
def test_m4a_through_ffmpeg(tmp_path):
    wav = tmp_path / "src.wav"
    sf.write(wav, _tone(44100, 1.0), 44100)
    m4a = tmp_path / "clip.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), str(m4a)], check=True)
    audio, sr = load_audio(m4a, 16000)
    assert sr == 16000 and abs(audio.shape[0] - 16000) < 2000
