"""Throughput and peak memory of rl_core's BEATs against avex's module, same random weights, same machine.

    /work/avex-venv/bin/python -m bench.peer.bench_beats [--reps 5] [--batches 1 8]   # from the repository root

10-s clips at 16 kHz, batch 1 and batch 8, under torch.inference_mode(), torch's default threads unless
``--threads`` says otherwise.

Timing: all configurations live in one process and are timed in turn, round after round (one warm-up pass each
first), so a change in the load of this shared machine hits all of them alike. Reported per configuration:
the best pass, and the median over rounds of its speed relative to avex float32 *in the same round*.

Memory: each configuration runs once more in a fresh subprocess: "model MB" is the resident size (VmRSS) after
loading, "peak MB" the resident high-water mark (VmHWM, reset after loading) during one inference pass,
"activations MB" their difference.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.peer.beats_avex_reference import build_avex_beats  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLIP_SECONDS = 10.0
SR = 16000
KEY = "esp_aves2_naturelm_audio_v1_beats"
HAVE_AVEX = importlib.util.find_spec("avex") is not None
CONFIGS = [
    # (name, implementation, bfloat16?)
    ("avex fp32", "avex", False),
    ("rl_core fp32", "rl_core", False),
    ("avex + autocast bf16", "avex", True),
    ("rl_core bf16", "rl_core", True),
]
if not HAVE_AVEX:  # e.g. `make bench` in the project venv: rl_core alone, ratios against rl_core fp32
    CONFIGS = [c for c in CONFIGS if c[1] != "avex"]
BASELINE = CONFIGS[0][0]


def proc_status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (resident high-water mark) of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    # "5" resets the high-water mark to the current resident size (ru_maxrss cannot be reset and survives exec)
    Path("/proc/self/clear_refs").write_text("5")


def load(impl: str, bf16: bool, weights: str):
    """(model, context factory) for one configuration."""
    if impl == "avex":
        model = build_avex_beats(KEY, None, seed=0)
        if bf16:
            return model, lambda: torch.autocast("cpu", dtype=torch.bfloat16)
        return model, contextlib.nullcontext
    import rl_core

    model = rl_core.load_model(KEY, checkpoint_path=weights, return_features_only=True, device="cpu",
                               precision="bfloat16" if bf16 else "float32")
    return model, contextlib.nullcontext


def clips(batch: int) -> torch.Tensor:
    return 0.1 * torch.randn(batch, int(CLIP_SECONDS * SR), generator=torch.Generator().manual_seed(0))


def memory_worker(impl: str, bf16: bool, batch: int, weights: str) -> dict:
    model, context = load(impl, bf16, weights)
    x = clips(batch)
    model_mb = proc_status_mb("VmRSS")
    reset_peak_rss()
    with torch.inference_mode(), context():
        out = model(x)
    assert out.shape == (batch, 496, 768), out.shape
    peak_mb = proc_status_mb("VmHWM")
    return {"model_mb": model_mb, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5, help="timed rounds at batch 1 (batch 8: half, at least 2)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--memory-worker", nargs=4, metavar=("IMPL", "BF16", "BATCH", "WEIGHTS"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        impl, bf16, batch, weights = args.memory_worker
        print(json.dumps(memory_worker(impl, bf16 == "1", int(batch), weights)))
        return

    from safetensors.torch import save_file

    tmp = tempfile.TemporaryDirectory(prefix="beats_bench_")  # removed at exit (the file is ~360 MB)
    weights = Path(tmp.name) / "naturelm_random.safetensors"
    if HAVE_AVEX:
        ref = build_avex_beats(KEY, None, seed=0)
    else:
        import rl_core

        print("avex is not installed: timing rl_core alone (run with /work/avex-venv/bin/python to compare)")
        torch.manual_seed(0)
        ref = rl_core.build_model(KEY)
    save_file({k: v.detach().clone().contiguous() for k, v in ref.state_dict().items()}, str(weights))
    del ref
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average at start "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    models = {name: load(impl, bf16, str(weights)) for name, impl, bf16 in CONFIGS}
    timing: dict[tuple[int, str], list[float]] = {}
    for batch in args.batches:
        x = clips(batch)
        reps = args.reps if batch == 1 else max(2, args.reps // 2)
        with torch.inference_mode():
            for name, (model, context) in models.items():  # warm-up
                with context():
                    model(x[:1])
            for rep in range(reps):
                for name, (model, context) in models.items():
                    with context():
                        start = time.perf_counter()
                        model(x)
                        timing.setdefault((batch, name), []).append(time.perf_counter() - start)
                print(f"batch {batch} round {rep}: " + ", ".join(
                    f"{name} {timing[(batch, name)][-1]:.2f} s" for name in models) +
                    f"  (load {os.getloadavg()[0]:.1f})", flush=True)
    del models

    memory = {}
    for batch in args.batches:
        for name, impl, bf16 in CONFIGS:
            cmd = [sys.executable, "-m", "bench.peer.bench_beats", *(["--threads", str(args.threads)] if args.threads else []),
                   "--memory-worker", impl, "1" if bf16 else "0", str(batch), str(weights)]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if done.returncode:
                raise SystemExit(f"memory worker failed: {cmd}\n{done.stderr[-2000:]}")
            memory[(batch, name)] = json.loads(done.stdout.strip().splitlines()[-1])

    print(f"\nload average at end {os.getloadavg()[0]:.1f}\n")
    print(f"{'batch':>5} {'configuration':<22} {'best s':>7} {'audio s/s':>9} {'x ' + BASELINE:>13} "
          f"{'model MB':>9} {'peak MB':>8} {'activ. MB':>9}")
    for batch in args.batches:
        base = timing[(batch, BASELINE)]
        for name, _, _ in CONFIGS:
            times = timing[(batch, name)]
            ratio = statistics.median(b / t for b, t in zip(base, times))
            mem = memory[(batch, name)]
            print(f"{batch:>5} {name:<22} {min(times):>7.2f} {batch * CLIP_SECONDS / min(times):>9.1f} "
                  f"{ratio:>12.2f}x {mem['model_mb']:>9.0f} {mem['peak_mb']:>8.0f} "
                  f"{mem['peak_mb'] - mem['model_mb']:>9.0f}")


if __name__ == "__main__":
    main()
