"""A small field archive made of the bundled real recordings (used by the project and Projects-tab tests).

Layout (26 recordings, 3 of them broken, plus files that must be skipped)::

    siteA/20240515_0630NN.wav     10 great-tit songs (22.05 kHz, as recorded), AudioMoth-style names
    siteB/20240516_0700NN.wav     10 more great-tit songs
    siteB/20240516_0800NN.flac    storm petrel, 44.1 kHz stereo FLAC
    siteB/20240516_0900NN.mp3     storm petrel, 32 kHz MP3
    siteB/petrel_48k.wav          storm petrel at 48 kHz (no date in its name)
    broken/truncated.wav          a real WAV cut in half (header promises more)
    broken/empty.wav              0 bytes
    broken/not_audio.flac         text with an audio extension
    + .hidden.wav, ._mac.wav, notes.txt, .cache/x.wav  (skipped and counted)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from rl_core.audio import load_audio
from rl_core.datasets_bundled import great_tit_songs, storm_petrel_recordings

GOOD_FILES = 23
BROKEN_FILES = 3


def make_archive(root: Path) -> Path:
    root = Path(root)
    songs = [s.path for s in great_tit_songs()]
    for i, song in enumerate(songs):
        site, day, hour = ("siteA", 15, 6) if i < 10 else ("siteB", 16, 7)
        folder = root / site
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(song, folder / f"202405{day}_{hour:02d}30{i:02d}.wav")
    petrel = storm_petrel_recordings()[0]
    audio44, _ = load_audio(petrel, 44100)
    sf.write(root / "siteB" / "20240516_080000.flac", np.stack([audio44, audio44 * 0.5], axis=1), 44100)
    audio32, _ = load_audio(petrel, 32000)
    sf.write(root / "siteB" / "20240516_090000.mp3", audio32, 32000, format="MP3")
    audio48, _ = load_audio(petrel, 48000)
    sf.write(root / "siteB" / "petrel_48k.wav", audio48, 48000, subtype="PCM_16")
    broken = root / "broken"
    broken.mkdir()
    data = songs[0].read_bytes()
    (broken / "truncated.wav").write_bytes(data[: len(data) // 2])
    (broken / "empty.wav").write_bytes(b"")
    (broken / "not_audio.flac").write_text("these are field notes, not audio\n")
    (root / "siteA" / ".hidden.wav").write_bytes(data)
    (root / "siteA" / "._mac.wav").write_bytes(b"\x00" * 100)
    (root / "siteA" / "notes.txt").write_text("deployment notes\n")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.wav").write_bytes(data)
    return root
