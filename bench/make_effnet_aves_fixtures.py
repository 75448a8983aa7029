"""Write the parameter-name fixtures for EfficientNet and AVES from the peer package avex.

Run with the avex environment: ``/work/avex-venv/bin/python bench/make_effnet_aves_fixtures.py``.
The official ESP safetensors were written from avex's modules, so their state_dict names and shapes are
the contract our modules must meet. avex's AVES constructor fetches the BirdAVES weights through
torch.hub; a random state dict is placed in a temporary torch hub cache so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
HEAD_CLASSES = 10  # any count works; the fixture records the shape it gives


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in module.state_dict().items()}


def dump(data: dict) -> str:
    """JSON with one tensor per line (readable diffs)."""
    text = json.dumps(data, indent=1)
    # fold the shape lists onto their name's line
    return re.sub(r"\[\s*([0-9,\s]*?)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text) + "\n"


def efficientnet(variant: str) -> dict:
    from avex.configs import AudioConfig
    from avex.models.efficientnet import Model

    cfg = AudioConfig(sample_rate=16000, n_fft=800, hop_length=160, win_length=800, window="hann", n_mels=128,
                      representation="mel_spectrogram", normalize=True, target_length_seconds=10)
    with_head = Model(num_classes=HEAD_CLASSES, pretrained=False, device="cpu", audio_config=cfg,
                      efficientnet_variant=variant)
    without_head = Model(num_classes=None, pretrained=False, device="cpu", audio_config=cfg,
                         efficientnet_variant=variant)
    return {
        "source": f"avex 1.4.0 avex.models.efficientnet.Model(efficientnet_variant='{variant}'), torch {torch.__version__}",
        "head_classes": HEAD_CLASSES,
        "with_head": shapes(with_head),
        "without_head": shapes(without_head),
    }


def place_random_birdaves(hub_dir: Path) -> None:
    """Put a random BirdAVES-shaped state dict where torch.hub looks before downloading."""
    from avex.models.aves_model import AVESConfig
    from torchaudio.models import wav2vec2_model

    net = wav2vec2_model(**AVESConfig().to_dict(), aux_num_out=None)
    (hub_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), hub_dir / "checkpoints" / "birdaves-biox-base.torchaudio.pt")


def aves() -> dict:
    from avex.models.aves_model import Model

    return {
        "source": f"avex 1.4.0 avex.models.aves_model.Model (BirdAVES biox base config), torch {torch.__version__}",
        "without_head": shapes(Model(num_classes=None, device="cpu")),
    }


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TORCH_HOME"] = tmp
        torch.hub.set_dir(str(Path(tmp) / "hub"))
        place_random_birdaves(Path(tmp) / "hub")
        FIXTURES.mkdir(parents=True, exist_ok=True)
        for variant in ("b0", "b1"):
            data = efficientnet(variant)
            (FIXTURES / f"efficientnet_{variant}_state_dict_shapes.json").write_text(dump(data))
            print(variant, len(data["with_head"]), "tensors with head,", len(data["without_head"]), "without")
        data = aves()
        (FIXTURES / "aves_state_dict_shapes.json").write_text(dump(data))
        print("aves", len(data["without_head"]), "tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
