"""Cached models stay on their device between requests, and their throughput there: one script for a GPU machine.

    python -m bench.device_check                  # cuda when available, else cpu
    python -m bench.device_check --device cpu --families beats --batches 1   # a quick dry run anywhere

For each family it writes the family's random-weight state dict to a safetensors file (speed does not depend on
the values), then, through the real serving path ``rl_core.cache.get_model(name, device, checkpoint_path)``:

1. first call: loads, and every parameter and buffer must be on the requested device;
2. inference, then a second call: must return the same object (a cache hit, no reload), with the same storage
   pointers, the same device memory in use, and no growth of the host's resident memory by anything like the
   model's size (no host copy of the weights);
3. throughput in seconds of audio per second for batches of windows of the model's own length, in float32 and
   in bfloat16 (the family's ``precision="bfloat16"`` where it has one, else autocast), with the device
   synchronised around each timed pass.

Exits non-zero when a check fails; prints one table to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import rl_core  # noqa: E402
from rl_core.cache import ModelCache  # noqa: E402
from rl_core.registry import get_model_class, list_model_classes, registered_models  # noqa: E402


def device_families() -> dict[str, str]:
    """family -> one registry key (an ESP model first), for every built-in family that computes in torch (a
    ``cpu_only`` family never goes to the GPU). Each batch item is one window of the model's own length."""
    entries = registered_models()
    keys: dict[str, str] = {}
    for key in sorted(entries, key=lambda k: (not k.startswith("esp_aves2_"), k)):
        keys.setdefault(entries[key].model_spec.name, key)
    return {family: keys[family] for family in list_model_classes(builtin=True)
            if family in keys and not get_model_class(family).cpu_only}


FAMILIES = device_families()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_bytes(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def random_checkpoint(key: str, folder: Path) -> Path:
    torch.manual_seed(0)
    net = rl_core.build_model(key, device="cpu")
    path = folder / f"{key}.safetensors"
    # clone: BEATs shares one bias table between layers, and safetensors refuses shared storage
    save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def throughput(model, device: torch.device, sample_rate: int, seconds: float, batch: int, reps: int,
               bf16: bool = False) -> float:
    x = 0.1 * torch.randn(batch, int(seconds * sample_rate), generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        model(x)  # warm-up (kernel selection, lazy init)
        sync(device)
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            model(x)
            sync(device)
            best = min(best, time.perf_counter() - start)
    return batch * seconds / best


def check_family(family: str, device: torch.device, folder: Path, batches: list[int], reps: int) -> list[str]:
    key = FAMILIES[family]
    failures: list[str] = []
    checkpoint = str(random_checkpoint(key, folder))
    cache = ModelCache()
    start = time.perf_counter()
    model = cache.get(key, device=str(device), checkpoint_path=checkpoint, return_features_only=True)
    load_s = time.perf_counter() - start
    tensors = list(model.parameters()) + list(model.buffers())
    off = [t.device for t in tensors if t.device.type != device.type]
    if off:
        failures.append(f"{family}: {len(off)} tensors not on {device} after loading ({off[0]})")
    pointers = [t.data_ptr() for t in tensors]
    sample_rate, seconds = model.sample_rate, model.audio_config.target_length_seconds
    rates = {b: throughput(model, device, sample_rate, seconds, b, reps) for b in batches}

    host_before, dev_before = rss_mb(), device_bytes(device)
    again = cache.get(key, device=str(device), checkpoint_path=checkpoint, return_features_only=True)
    if again is not model or cache.stats.misses != 1 or cache.stats.hits != 1:
        failures.append(f"{family}: second get_model was not a cache hit (misses {cache.stats.misses})")
    if [t.data_ptr() for t in list(again.parameters()) + list(again.buffers())] != pointers:
        failures.append(f"{family}: parameter storage moved between calls")
    rates_again = throughput(again, device, sample_rate, seconds, batches[0], 1)
    host_growth, dev_growth = rss_mb() - host_before, device_bytes(device) - dev_before
    weights_mb = model.memory_bytes() / 2**20
    if device.type == "cuda" and host_growth > 0.5 * weights_mb:
        failures.append(f"{family}: host RSS grew {host_growth:.0f} MB on a cached call ({weights_mb:.0f} MB of weights)")
    if dev_growth / 2**20 > 0.5 * weights_mb:
        failures.append(f"{family}: device memory grew {dev_growth / 2**20:.0f} MB on a cached call (a second copy?)")
    same = "same object" if again is model else "A NEW OBJECT"

    if type(model).supports_bfloat16:  # the family's own bf16 path
        fast = cache.get(key, device=str(device), checkpoint_path=checkpoint, return_features_only=True,
                         precision="bfloat16")
        bf16 = {b: throughput(fast, device, sample_rate, seconds, b, reps) for b in batches}
        del fast
    else:
        bf16 = {b: throughput(model, device, sample_rate, seconds, b, reps, bf16=True) for b in batches}
    for b in batches:
        print(f"| {family} | `{key}` | {device} | {b} | {rates[b]:.1f} | {bf16[b]:.1f} | load {load_s:.2f} s, "
              f"weights {weights_mb:.0f} MB; cached call: {same}, host RSS {host_growth:+.0f} MB, device "
              f"memory {dev_growth / 2**20:+.0f} MB, {rates_again:.1f} audio s/s |", flush=True)
    cache.clear()
    del model, again
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return failures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {name}")
    print("| family | model | device | batch | fp32 audio s/s | bf16 audio s/s | cache check |")
    print("|---|---|---|---|---|---|---|")
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="device_check_") as folder:
        for family in args.families:
            failures += check_family(family, device, Path(folder), args.batches, args.reps)
    for failure in failures:
        print("FAILED:", failure)
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
