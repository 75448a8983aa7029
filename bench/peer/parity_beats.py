"""Parity of rl_core's BEATs with avex's module, through a safetensors round trip.

    /work/avex-venv/bin/python -m bench.peer.parity_beats   # from the repository root

For each official variant: build avex's BEATs wrapper with seeded random weights, save its state_dict as
safetensors, load that file with ``rl_core.load_model(<registry key>, checkpoint_path=...)`` and compare outputs
on the same audio (fp32, max abs diff; pass mark 1e-4). Also checks a file written with safetensors'
``save_model`` (aliases of the shared position table dropped), a padding mask, and bf16 vs fp32 accuracy.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download; fail fast instead of retrying

import torch  # noqa: E402
from safetensors.torch import save_file, save_model  # noqa: E402

import rl_core  # noqa: E402
from bench.peer.beats_avex_reference import build_avex_beats  # noqa: E402
from rl_core.registry import get_model_entry  # noqa: E402


TOLERANCE = 1e-4
CASES = [
    # (registry key, avex YAML, num_classes of the head, sample rate, seconds)
    ("esp_aves2_sed_birdcode_beats_encoder", "esp_aves2_sed_birdcode_beats_encoder", None, 32000, 5.0),
    ("esp_aves2_naturelm_audio_v1_beats", "esp_aves2_naturelm_audio_v1_beats", None, 16000, 10.0),
    ("esp_aves2_sl_beats_all", "esp_aves2_sl_beats_all", 7, 16000, 10.0),
]


def audio(batch: int, samples: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000.0
    chirp = 0.3 * torch.sin(2 * torch.pi * (500 + 300 * t) * t)
    # loud enough that NatureLM's clipping to [-1, 1] matters
    return chirp + 0.4 * torch.randn(batch, samples, generator=g)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def main() -> None:
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    tmp_dir = tempfile.TemporaryDirectory(prefix="beats_parity_")  # removed at exit (files of ~360 MB)
    tmp = Path(tmp_dir.name)
    for key, avex_yaml, num_classes, sr, seconds in CASES:
        ref = build_avex_beats(avex_yaml, num_classes, seed=0)
        path = tmp / f"{key}.safetensors"
        save_file({k: v.detach().clone().contiguous() for k, v in ref.state_dict().items()}, str(path))
        x = audio(2, int(sr * seconds))
        ours_feat = rl_core.load_model(key, checkpoint_path=path, return_features_only=True, device="cpu")
        with torch.inference_mode():
            # avex's wrapper returns features when built without a head; otherwise ask its backbone directly
            ref_feat = ref.backbone(ref.process_audio(x))[0] if num_classes else ref(x)
            got_feat = ours_feat(x)
        rows.append((key, "features", tuple(got_feat.shape), max_diff(got_feat, ref_feat)))
        if num_classes:
            # The registry entry's class mapping lives on the Hub; point it at a local one with as many labels
            # as this random head (load_model attaches the YAML's mapping when it keeps a checkpoint's head).
            labels = tmp / "label_map.json"
            labels.write_text(json.dumps({f"species_{i}": i for i in range(num_classes)}))
            entry = get_model_entry(key).model_copy(update={"class_mapping_path": str(labels)})
            ours_head = rl_core.load_model(entry, checkpoint_path=path, device="cpu")
            assert ours_head.class_labels == [f"species_{i}" for i in range(num_classes)]
            assert ours_head.num_classes == num_classes, ours_head.num_classes
            with torch.inference_mode():
                rows.append((key, "logits", tuple(ours_head(x).shape), max_diff(ours_head(x), ref(x))))
                mask = torch.zeros_like(x, dtype=torch.bool)
                mask[1, int(0.6 * x.shape[1]):] = True
                rows.append((key, "logits, padding mask", tuple(ref(x, mask).shape),
                             max_diff(ours_head(x, mask), ref(x, mask))))
        if key == "esp_aves2_naturelm_audio_v1_beats":
            # a file without the aliased copies of the shared position table (safetensors.save_model dedups)
            dedup = tmp / "dedup.safetensors"
            save_model(ref, str(dedup))
            ours_dedup = rl_core.load_model(key, checkpoint_path=dedup, return_features_only=True, device="cpu")
            with torch.inference_mode():
                rows.append((key, "features, save_model file", tuple(got_feat.shape),
                             max_diff(ours_dedup(x), ref_feat)))
            # bf16 autocast path against the fp32 reference
            ours_bf16 = rl_core.load_model(key, checkpoint_path=path, return_features_only=True, device="cpu",
                                           precision="bfloat16")
            with torch.inference_mode():
                got_bf16 = ours_bf16(x)
                pooled_ref, pooled_bf16 = ref_feat.mean(1), got_bf16.mean(1)
            cos = torch.nn.functional.cosine_similarity(pooled_ref, pooled_bf16, dim=-1).min().item()
            rel = ((got_bf16 - ref_feat).norm() / ref_feat.norm()).item()
            rows.append((key, "bf16 features (max abs)", tuple(got_bf16.shape), max_diff(got_bf16, ref_feat)))
            print(f"bf16 vs fp32: relative L2 error of features {rel:.2e}; min cosine of mean-pooled "
                  f"embeddings {cos:.6f}; feature std {ref_feat.std().item():.3f}")
    print(f"\n{'model':<40} {'output':<28} {'shape':<16} {'max |diff|':>11}  pass(<= {TOLERANCE:g})")
    ok = True
    for key, what, shape, diff in rows:
        passed = diff <= TOLERANCE or what.startswith("bf16")
        ok &= passed
        print(f"{key:<40} {what:<28} {str(shape):<16} {diff:>11.2e}  {'yes' if passed else 'NO'}")
    print("\nALL PASS" if ok else "\nFAILURES")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s)")
