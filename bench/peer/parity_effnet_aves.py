"""Numerical parity of rl_core's EfficientNet and AVES with the peer package avex (round trip of weights).

For each case: build avex's module with seeded random weights, save its state_dict as safetensors, load
that file with ``rl_core.load_model(key, checkpoint_path=...)`` and run both on the same audio.
Pass: max |difference| <= 1e-4 (float32) for features and logits.

Run from the repository root with the avex environment (bench/peer/README.md):
    /work/avex-venv/bin/python -m bench.peer.parity_effnet_aves
avex's AVES constructor fetches BirdAVES weights through torch.hub; a random state dict is placed in a
temporary torch hub cache first, so nothing is downloaded.
"""

from __future__ import annotations

import math
import sys
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

import rl_core
from rl_core.registry import get_model_entry

TOLERANCE = 1e-4
SR = 16000


def test_audio(batch: int = 2, seconds: float = 10.0) -> torch.Tensor:
    """Noise plus a rising chirp, different per example (so the per-example min-max differs)."""
    g = torch.Generator().manual_seed(1234)
    t = torch.arange(int(seconds * SR)) / SR
    clips = []
    for i in range(batch):
        chirp = torch.sin(2 * math.pi * (800 + 300 * i) * t + 2 * math.pi * 200 * t**2)
        clips.append(0.3 * chirp + 0.05 * (i + 1) * torch.randn(t.shape, generator=g))
    return torch.stack(clips).float()


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Seeded random values for every float tensor, including norm statistics (not the init defaults)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=g))
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=g))
            elif tensor.ndim == 1:  # norm scales
                tensor.copy_(1.0 + 0.1 * torch.randn(tensor.shape, generator=g))
            else:
                fan_in = max(1, tensor[0].numel())
                tensor.copy_(torch.randn(tensor.shape, generator=g) / math.sqrt(fan_in))


def save(module: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


def report(label: str, ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    same_shape = tuple(ours.shape) == tuple(theirs.shape)
    diff = (ours - theirs).abs().max().item() if same_shape else float("inf")
    ok = same_shape and diff <= TOLERANCE
    scale = theirs.abs().max().item()
    print(f"{label:52s} shape {tuple(ours.shape)!s:20s} max|avex| {scale:8.3f} max|diff| {diff:.2e}  "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


def efficientnet_cases(tmp: Path, audio: torch.Tensor) -> list[bool]:
    from avex.configs import AudioConfig
    from avex.models.efficientnet import Model

    cfg = AudioConfig(sample_rate=SR, n_fft=800, hop_length=160, win_length=800, window="hann", n_mels=128,
                      representation="mel_spectrogram", normalize=True, target_length_seconds=10)
    results = []
    for key, variant, seed in (("esp_aves2_effnetb0_all", "b0", 1), ("efficientnet_b1", "b1", 2)):
        entry = get_model_entry(key)
        # the label map lives on the Hub; the parity checks the network, so leave it out
        entry = entry.model_copy(update={"class_mapping_path": None})

        # backbone only: avex returns the (B, 1280, H, W) feature map when num_classes is None
        torch.manual_seed(seed)
        theirs = Model(num_classes=None, pretrained=False, device="cpu", audio_config=cfg,
                       efficientnet_variant=variant).eval()
        randomise(theirs, seed)
        ckpt = save(theirs, tmp / f"effnet_{variant}_backbone.safetensors")
        ours = rl_core.load_model(entry, checkpoint_path=ckpt, return_features_only=True, device="cpu")
        with torch.inference_mode():
            results.append(report(f"{key} features", ours(audio), theirs(audio)))

        # with a 7-class head: logits
        theirs = Model(num_classes=7, pretrained=False, device="cpu", audio_config=cfg,
                       efficientnet_variant=variant).eval()
        randomise(theirs, seed + 10)
        ckpt = save(theirs, tmp / f"effnet_{variant}_head.safetensors")
        ours = rl_core.load_model(entry, checkpoint_path=ckpt, device="cpu")
        assert ours.num_classes == 7, ours.num_classes
        with torch.inference_mode():
            results.append(report(f"{key} logits (7 classes)", ours(audio), theirs(audio)))
    return results


def aves_cases(tmp: Path, audio: torch.Tensor) -> list[bool]:
    from avex.models.aves_model import AVESConfig, Model
    from torchaudio.models import wav2vec2_model

    # what avex's constructor will "download": a seeded random torchaudio state dict in the hub cache
    hub = tmp / "hub"
    torch.hub.set_dir(str(hub))
    (hub / "checkpoints").mkdir(parents=True, exist_ok=True)
    raw = wav2vec2_model(**AVESConfig().to_dict(), aux_num_out=None)
    randomise(raw, 3)
    raw_path = hub / "checkpoints" / "birdaves-biox-base.torchaudio.pt"
    torch.save(raw.state_dict(), raw_path)

    theirs = Model(num_classes=None, device="cpu").eval()
    ckpt = save(theirs, tmp / "aves.safetensors")
    results = []
    for label, path in (("birdaves_biox_base features (avex safetensors)", ckpt),
                        ("birdaves_biox_base features (torchaudio .pt)", raw_path)):
        ours = rl_core.load_model("birdaves_biox_base", checkpoint_path=path, return_features_only=True, device="cpu")
        with torch.inference_mode():
            results.append(report(label, ours(audio), theirs(audio)))
    with torch.inference_mode():
        mid_theirs = theirs.model.extract_features(audio)[0][5]
        mid_ours = ours.extract_embeddings(audio, layers=5, aggregation="none")
    results.append(report("birdaves_biox_base transformer layer 5 (hook)", mid_ours, mid_theirs))
    return results


def main() -> int:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    audio = test_audio()
    print(f"torch {torch.__version__}, audio {tuple(audio.shape)} at {SR} Hz, tolerance {TOLERANCE}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        results = efficientnet_cases(tmp, audio) + aves_cases(tmp, audio)
    print(f"{sum(results)}/{len(results)} cases pass")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
