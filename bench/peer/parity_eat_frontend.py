"""Compare rl_core's EAT front end with avex's ``EATAudioProcessor`` (the only EAT part avex can run offline).

Run from the repository root with the avex environment (bench/peer/README.md):

    /work/avex-venv/bin/python -m bench.peer.parity_eat_frontend

avex's processor computes torchaudio's Kaldi fbank one clip at a time on the CPU; ours is batched. The script
prints the largest absolute difference of the normalised (B, 1024, 128) spectrograms for 10-s and 5-s clips
and both normalisation settings (EAT-base defaults and the ESP YAML values).
"""

import torch
from avex.models.eat.audio_processor import EATAudioProcessor

from rl_core.loading import build_model


def main() -> None:
    torch.manual_seed(0)
    for mean, std in ((-4.268, 4.569), (-5.553, 4.606)):
        ours = build_model("eat", eat_norm_mean=mean, eat_norm_std=std).eval()
        theirs = EATAudioProcessor(sample_rate=16000, target_length=1024, n_mels=128, norm_mean=mean, norm_std=std)
        for seconds in (10, 5):
            t = torch.arange(seconds * 16000) / 16000
            clips = torch.stack([0.1 * torch.randn(t.numel()) + 0.05,  # noise with a DC offset
                                 0.3 * torch.sin(2 * torch.pi * 3000 * t)])
            with torch.inference_mode():
                a = ours.spectrogram(clips).squeeze(1)
            b = theirs(clips)
            print(f"norm ({mean}, {std}) {seconds:>2d} s: shapes {tuple(a.shape)} {tuple(b.shape)}, "
                  f"max |ours - avex| = {(a - b).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
