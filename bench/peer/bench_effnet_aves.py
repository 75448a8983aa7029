"""Throughput and peak memory of rl_core's EfficientNet-B0 and AVES against avex's modules, same run.

Figures: seconds of audio processed per second (10-s clips at batch 1 and 8, float32, inference mode),
wall-clock and process-CPU based, from rounds in which ours and avex alternate (so both see the same
machine load): the best round (least disturbed by other processes) and the median; peak resident memory of a fresh process that builds one model and runs one
batch. Run from the repository root with the avex environment (bench/peer/README.md):
    /work/avex-venv/bin/python -m bench.peer.bench_effnet_aves [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]

SR = 16000
CLIP_SECONDS = 10


def build(impl: str, family: str, hub_dir: Path) -> torch.nn.Module:
    """One model with random weights (throughput does not depend on the values)."""
    torch.manual_seed(0)
    if impl == "ours":
        import rl_core

        key = {"effnet": "esp_aves2_effnetb0_audioset", "aves": "birdaves_biox_base"}[family]
        return rl_core.build_model(key, return_features_only=True).eval()
    if family == "effnet":
        from avex.configs import AudioConfig
        from avex.models.efficientnet import Model

        cfg = AudioConfig(sample_rate=SR, n_fft=800, hop_length=160, win_length=800, window="hann", n_mels=128,
                          representation="mel_spectrogram", normalize=True, target_length_seconds=CLIP_SECONDS)
        return Model(num_classes=None, pretrained=False, device="cpu", audio_config=cfg).eval()
    from avex.models.aves_model import AVESConfig, Model
    from torchaudio.models import wav2vec2_model

    # avex's constructor loads BirdAVES through torch.hub: give it a random file in a private hub cache
    torch.hub.set_dir(str(hub_dir))
    target = hub_dir / "checkpoints" / "birdaves-biox-base.torchaudio.pt"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(wav2vec2_model(**AVESConfig().to_dict(), aux_num_out=None).state_dict(), target)
    return Model(num_classes=None, device="cpu").eval()


def batch_audio(batch: int) -> torch.Tensor:
    return 0.1 * torch.randn(batch, SR * CLIP_SECONDS, generator=torch.Generator().manual_seed(batch))


def timed(model: torch.nn.Module, audio: torch.Tensor) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        model(audio)
    return time.perf_counter() - wall, time.process_time() - cpu


def throughput(family: str, batches: list[int], rounds: int, hub_dir: Path) -> list[dict]:
    models = {impl: build(impl, family, hub_dir) for impl in ("ours", "avex")}
    rows = []
    for batch in batches:
        audio = batch_audio(batch)
        for model in models.values():
            timed(model, audio)  # warm-up (allocator, oneDNN kernels)
        walls: dict[str, list[float]] = {"ours": [], "avex": []}
        cpus: dict[str, list[float]] = {"ours": [], "avex": []}
        for r in range(rounds):
            order = ("ours", "avex") if r % 2 == 0 else ("avex", "ours")
            for impl in order:
                wall, cpu = timed(models[impl], audio)
                walls[impl].append(wall)
                cpus[impl].append(cpu)
        seconds = batch * CLIP_SECONDS
        row = {"family": family, "batch": batch}
        for impl in ("ours", "avex"):
            # best round: the one least disturbed by other processes on a shared machine
            row[f"{impl}_audio_s_per_s"] = seconds / min(walls[impl])
            row[f"{impl}_audio_s_per_s_median"] = seconds / statistics.median(walls[impl])
            row[f"{impl}_audio_s_per_cpu_s"] = seconds / min(cpus[impl])
        row["ratio_wall"] = row["ours_audio_s_per_s"] / row["avex_audio_s_per_s"]
        row["ratio_cpu"] = row["ours_audio_s_per_cpu_s"] / row["avex_audio_s_per_cpu_s"]
        rows.append(row)
        print(f"{family:6s} batch {batch}: best round ours {row['ours_audio_s_per_s']:7.1f} s/s, avex "
              f"{row['avex_audio_s_per_s']:7.1f} s/s (ratio {row['ratio_wall']:.2f}); median ours "
              f"{row['ours_audio_s_per_s_median']:7.1f}, avex {row['avex_audio_s_per_s_median']:7.1f}; per CPU-second: ours "
              f"{row['ours_audio_s_per_cpu_s']:6.1f}, avex {row['avex_audio_s_per_cpu_s']:6.1f} "
              f"(ratio {row['ratio_cpu']:.2f})", flush=True)
    return rows


def high_water_mib() -> float:
    """This process's peak resident memory (VmHWM). getrusage's ru_maxrss is not used: on Linux it
    carries the parent's peak into a child process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def peak_memory_child(impl: str, family: str, batch: int, threads: int, hub_dir: str) -> None:
    """Fresh process: report peak RSS after building and after one forward pass (MiB)."""
    torch.set_num_threads(threads)
    model = build(impl, family, Path(hub_dir))
    built = high_water_mib()
    timed(model, batch_audio(batch))
    peak = high_water_mib()
    print(json.dumps({"built_mib": built, "peak_mib": peak}))


def peak_memory(impl: str, family: str, batch: int, threads: int, hub_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.peer.bench_effnet_aves", "--memory-child", impl, family, str(batch), "--threads", str(threads),
         "--hub-dir", str(hub_dir)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--families", nargs="+", default=["effnet", "aves"], choices=["effnet", "aves"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--memory-child", nargs=3, metavar=("IMPL", "FAMILY", "BATCH"))
    parser.add_argument("--hub-dir")
    parser.add_argument("--skip-throughput", action="store_true", help="only measure peak memory")
    args = parser.parse_args()
    if args.memory_child:
        impl, family, batch = args.memory_child
        peak_memory_child(impl, family, int(batch), args.threads, args.hub_dir)
        return 0

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; {CLIP_SECONDS}-s clips at {SR} Hz, {args.rounds} alternating rounds")
    with tempfile.TemporaryDirectory() as tmp:
        hub_dir = Path(tmp) / "hub"
        for family in args.families if not args.skip_throughput else []:
            throughput(family, args.batches, args.rounds, hub_dir)
        for family in args.families:
            for batch in args.batches:
                for impl in ("ours", "avex"):
                    mem = peak_memory(impl, family, batch, args.threads, hub_dir)
                    print(f"{family:6s} batch {batch} {impl:4s}: peak RSS {mem['peak_mib']:7.0f} MiB "
                          f"(after build {mem['built_mib']:6.0f} MiB, forward adds {mem['peak_mib'] - mem['built_mib']:6.0f})",
                          flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
