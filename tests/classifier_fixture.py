"""A real saved classifier for the tests: storm-petrel windows against great-tit windows, on BirdNET V2.4
embeddings of bundled recordings (the second storm-petrel recording and great tits 5-14; the first storm-petrel
recording and great tits 0-4 stay unseen)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rl_core.datasets_bundled import great_tit_songs, storm_petrel_recordings

CLASS = "storm petrel"


def save_petrel_classifier(folder: Path, backbone: str = "birdnet_v2_4") -> tuple[Path, Path]:
    """``folder/petrel.safetensors`` and ``folder/petrel.yaml`` (``backbone`` is written into the card: another
    name makes a classifier of another backbone with the same weights)."""
    from rl_core.cache import get_model
    from rl_core.custom_classifier import train_classifier
    from rl_core.inference import analyse_recording

    model = get_model("birdnet_v2_4")
    positives = analyse_recording(model, storm_petrel_recordings()[1], want_scores=False).embeddings
    negatives = np.concatenate([analyse_recording(model, song.path, want_scores=False).embeddings
                                for song in great_tit_songs()[5:15]])
    classifier = train_classifier(np.concatenate([positives, negatives]),
                                  [CLASS] * len(positives) + ["negative"] * len(negatives), backbone)
    return classifier.save(folder / "petrel")
