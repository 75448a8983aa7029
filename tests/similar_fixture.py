"""A small project of real recordings tiled into 3-s windows whose taxon is known (search and classifier tests).

Each tile is one bundled recording (or a 3-s piece of one) padded to exactly 3 s, so every BirdNET window of the
project holds one taxon::

    siteA/20240515_063000.wav   8 great-tit songs (Parus major)
    siteB/20240516_070000.wav   8 more great-tit songs
    siteB/20240516_080000.wav   8 pieces of Bengalese finch song (Lonchura striata domestica)
    siteA/20240517_090000.wav   5 zebra-finch songs/calls (Taeniopygia guttata)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from rl_core.audio import load_audio
from rl_core.datasets_bundled import great_tit_songs, pykanto_dir, vocalpy_examples_dir

RATE = 48000
TILE_S = 3.0


def _tile(audio: np.ndarray) -> np.ndarray:
    n = int(RATE * TILE_S)
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, len(audio))] = audio[:n]
    return out


def make_tiled_project_audio(root: Path) -> dict[str, list[str]]:
    """Write the recordings; returns each file's relative path -> the taxon of each of its windows."""
    root = Path(root)
    songs = [s.path for s in great_tit_songs()]
    finch = sorted((pykanto_dir() / "raw" / "BENGALESE_FINCH").rglob("*.wav"))
    finch_audio = np.concatenate([load_audio(p, RATE)[0] for p in finch])
    zebra = [vocalpy_examples_dir() / n for n in ("bells.wav", "flashcam.wav", "samba.wav", "simple.wav",
                                                  "WhiLbl0010_110411-DC-01.wav")]
    plan = {
        "siteA/20240515_063000.wav": ("Parus major", [load_audio(p, RATE)[0] for p in songs[:8]]),
        "siteB/20240516_070000.wav": ("Parus major", [load_audio(p, RATE)[0] for p in songs[8:16]]),
        "siteB/20240516_080000.wav": ("Lonchura striata domestica",
                                      [finch_audio[int(i * TILE_S * RATE):] for i in range(8)]),
        "siteA/20240517_090000.wav": ("Taeniopygia guttata", [load_audio(p, RATE)[0] for p in zebra]),
    }
    truth = {}
    for rel, (taxon, pieces) in plan.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.concatenate([_tile(p) for p in pieces]), RATE, subtype="PCM_16")
        truth[rel] = [taxon] * len(pieces)
    return truth


def multi_taxon_windows(device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(windows, 1024) BirdNET embeddings of the bundled multi-taxon recordings and each window's taxon (the search
    and classifier quality figures: tests and bench/bench_search.py)."""
    from rl_core.cache import get_model
    from rl_core.evaluation.runner import multi_taxon
    from rl_core.inference import analyse_recording

    model = get_model("birdnet_v2_4", device=device)
    taxon = {c.path: c.labels[0] for c in multi_taxon().clips}
    rows, labels = [], []
    for path in sorted(taxon):
        result = analyse_recording(model, path, want_scores=False)
        rows.append(result.embeddings)
        labels += [taxon[path]] * len(result.embeddings)
    return np.concatenate(rows), np.array(labels)
