"""Decoding, resampling, windowing and every kind of bad recording."""

from __future__ import annotations

import subprocess
import shutil

import librosa
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample as scipy_fft_resample

from rl_core.audio import audio_info, iter_audio_blocks, iter_windows, load_audio
from rl_core.resampling import RESAMPLING_METHODS, resample
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


RATE_PAIRS = [(44100, 16000), (22050, 32000), (44100, 48000), (32000, 48000), (96000, 48000)]


def _noise_with_tones(sr: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(sr)
    t = np.arange(int(sr * seconds)) / sr
    return (0.05 * rng.standard_normal(t.shape[0]) + 0.2 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)


@pytest.mark.parametrize("orig_sr,target_sr", RATE_PAIRS)
def test_kaiser_best_equals_librosa(orig_sr, target_sr):
    x = _noise_with_tones(orig_sr, 2.0)
    ours = resample(x, orig_sr, target_sr, "kaiser_best")
    ref = librosa.resample(x, orig_sr=orig_sr, target_sr=target_sr, res_type="kaiser_best", scale=True)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.sqrt(np.mean((ours - ref) ** 2)) / np.sqrt(np.mean(ref**2)) < 1e-4
    assert np.abs(ours - ref).max() < 1e-3  # edges included


def test_kaiser_best_equals_librosa_on_a_real_recording(storm_petrels):
    x, sr = sf.read(storm_petrels[0], dtype="float32")
    assert sr == 44100
    ours = resample(x, sr, 48000)
    ref = librosa.resample(x, orig_sr=sr, target_sr=48000, res_type="kaiser_best", scale=True)
    assert ours.shape == ref.shape
    assert np.sqrt(np.mean((ours - ref) ** 2)) / np.sqrt(np.mean(ref**2)) < 2e-5


def test_coprime_rates_fall_back_to_the_same_filter():
    x = _noise_with_tones(44100, 0.5)
    ref = librosa.resample(x, orig_sr=44100, target_sr=16001, res_type="kaiser_best", scale=True)
    np.testing.assert_allclose(resample(x, 44100, 16001), ref, atol=1e-6)


@pytest.mark.parametrize("orig_sr,target_sr", RATE_PAIRS)
def test_streamed_kaiser_best_blocks_equal_the_whole_file(tmp_path, orig_sr, target_sr):
    x = _noise_with_tones(orig_sr, 5.3)
    path = tmp_path / "x.wav"
    sf.write(path, x, orig_sr, subtype="FLOAT")
    whole = resample(x, orig_sr, target_sr, "kaiser_best")
    blocks = list(iter_audio_blocks(path, target_sr, block_seconds=1.0))
    assert len(blocks) >= 5
    np.testing.assert_allclose(np.concatenate(blocks), whole, atol=2e-6)
    audio, _ = load_audio(path, target_sr)
    np.testing.assert_allclose(audio, whole, atol=2e-6)


@pytest.mark.parametrize("orig_sr,target_sr", RATE_PAIRS)
def test_fft_windows_are_each_segment_resampled_alone(tmp_path, orig_sr, target_sr):
    """BirdNET's rule: each 3-s segment at the native rate is FFT-resampled on its own, then zero-padded."""
    x = _noise_with_tones(orig_sr, 7.5)
    path = tmp_path / "x.wav"
    sf.write(path, x, orig_sr, subtype="FLOAT")
    windows = list(iter_windows(path, target_sr, 3.0, resampling="fft"))
    assert [s for s, _ in windows] == [0.0, 3.0, 6.0]
    seg = 3 * orig_sr
    for i, (_, window) in enumerate(windows):
        part = x[i * seg : (i + 1) * seg]
        expected = scipy_fft_resample(part, round(part.shape[0] / orig_sr * target_sr))
        assert window.shape == (3 * target_sr,)
        np.testing.assert_allclose(window[: expected.shape[0]], expected, atol=1e-6)
        assert not window[expected.shape[0] :].any()


def test_fft_windows_with_hop_and_a_real_recording(storm_petrels):
    x, sr = sf.read(storm_petrels[0], dtype="float32")
    windows = list(iter_windows(storm_petrels[0], 48000, 3.0, hop_s=1.5, resampling="fft"))
    assert [s for s, _ in windows][:3] == [0.0, 1.5, 3.0]
    start, window = windows[3]
    part = x[int(start * sr) : int(start * sr) + 3 * sr]
    np.testing.assert_allclose(window, scipy_fft_resample(part, 144000), atol=1e-6)


@pytest.mark.parametrize("n", [132300, 96000, 288000, 144000, 99999, 7, 1])
def test_fft_resample_is_scipy_signal_resample_to_the_bit(n):
    """rl_core's FFT rule avoids importing scipy.signal (1-2 s per worker process) by doing its steps itself."""
    from rl_core.resampling import fft_resample

    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    for num in (144000, round(n / 44100 * 48000) or 1, 2 * n, max(1, n // 3), n):
        expected = scipy_fft_resample(x, num).astype(np.float32, copy=False)
        got = fft_resample(x, num)
        assert got.dtype == np.float32 and np.array_equal(got, expected), (n, num)


@pytest.mark.parametrize("resampling", RESAMPLING_METHODS)
def test_same_rate_is_not_resampled(tmp_path, resampling):
    x = _noise_with_tones(48000, 4.0)
    path = tmp_path / "x.wav"
    sf.write(path, x, 48000, subtype="FLOAT")
    windows = list(iter_windows(path, 48000, 3.0, resampling=resampling))
    np.testing.assert_array_equal(windows[0][1], x[:144000])
    np.testing.assert_array_equal(windows[1][1][:48000], x[144000:])


def test_unknown_resampling_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown resampling 'soxr_hq'"):
        resample(np.zeros(100, np.float32), 44100, 48000, "soxr_hq")


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


@pytest.mark.parametrize("fmt,subtype,message", [
    ("wav", "PCM_16", r"its header declares 6.0 s of audio but only 3.0 s are present"),
    ("flac", "PCM_16", r"its header declares 6.0 s of audio but only [0-3].0 s are present"),
    ("ogg", "VORBIS", r"the stream stops without its end after [2-3].\d s"),
    ("ogg", "OPUS", r"the stream stops without its end after [2-3].\d s"),
    ("mp3", "MPEG_LAYER_III", r"its header declares 6.0 s of audio but only [2-3].\d s are present"),
])
def test_a_truncated_recording_is_refused_in_every_format(tmp_path, fmt, subtype, message):
    """One rule for every format: a file whose end is missing is refused with TruncatedAudioError, never analysed
    as a shorter recording (the complete file is read as 6 s)."""
    noise = (np.random.default_rng(1).standard_normal(48000 * 6) * 0.1).astype(np.float32)
    full = tmp_path / f"full.{fmt}"
    sf.write(full, noise, 48000, format=fmt.upper(), subtype=subtype)
    assert audio_info(full).duration_s == pytest.approx(6.0, abs=0.06)
    cut = tmp_path / f"cut.{fmt}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedAudioError, match=f"cut.{fmt}: the file is truncated: {message}"):
        audio_info(cut)
    with pytest.raises(TruncatedAudioError):
        list(iter_windows(cut, 48000, 3.0))


def test_truncated_wav_message_tells_close_lengths_apart(tmp_path):
    full = tmp_path / "full.wav"
    sf.write(full, _tone(16000, 2.0), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:-100])
    with pytest.raises(TruncatedAudioError, match="declares 2.000 s of audio but only 1.997 s are present"):
        load_audio(cut)


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


def test_a_model_yaml_with_an_unknown_resampling_names_the_key():
    from rl_core.configs import parse_model_entry
    from rl_core.errors import ConfigError

    entry = {"model_spec": {"name": "beats", "audio_config": {"sample_rate": 16000, "resampling": "kaiser_best"}}}
    assert parse_model_entry(entry, "ok.yml").model_spec.audio_config.resampling == "kaiser_best"
    entry["model_spec"]["audio_config"]["resampling"] = "soxr_hq"
    with pytest.raises(ConfigError, match="bad.yml: 'model_spec.audio_config.resampling'"):
        parse_model_entry(entry, "bad.yml")
