"""Benchmark recordings: real pykanto songs resampled to 48 kHz, tiled with faint noise, written block by block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 48000


def song_tile(sample_rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """The 2 storm-petrel and 20 great-tit recordings of the pykanto wheel at ``sample_rate``, peak-normalised,
    separated by 0.5 s of faint noise (about 90 s of audio, float32)."""
    from rl_core.audio import load_audio
    from rl_core.datasets_bundled import great_tit_songs, storm_petrel_recordings

    rng = np.random.default_rng(seed)
    gap = int(0.5 * sample_rate)
    parts = []
    paths = list(storm_petrel_recordings()) + [song.path for song in great_tit_songs()]
    for path in paths:
        audio, _ = load_audio(path, sample_rate)
        audio = 0.5 * audio / max(1e-6, float(np.abs(audio).max()))
        parts.append(audio.astype(np.float32))
        parts.append((rng.standard_normal(gap) * 0.005).astype(np.float32))
    return np.concatenate(parts)


def write_tiled_recording(path: str | Path, seconds: float, sample_rate: int = SAMPLE_RATE, seed: int = 0) -> Path:
    """A 16-bit mono WAV of ``seconds`` seconds: the song tile repeated, plus fresh faint noise each repetition.
    Written one tile at a time, so an hour never sits in memory."""
    path = Path(path)
    tile = song_tile(sample_rate, seed)
    rng = np.random.default_rng(seed + 1)
    remaining = int(round(seconds * sample_rate))
    with sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as fh:
        while remaining > 0:
            n = min(remaining, tile.shape[0])
            block = tile[:n] + (rng.standard_normal(n) * 0.003).astype(np.float32)
            fh.write(np.clip(block, -1.0, 1.0))
            remaining -= n
    return path
