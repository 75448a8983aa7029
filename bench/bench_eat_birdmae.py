"""Throughput of rl_core's EAT and Bird-MAE on 10-s clips: seconds of audio per second, batch 1 and 8.

    python -m bench.bench_eat_birdmae                       # eat and birdmae_base, float32, batch 1 and 8
    python -m bench.bench_eat_birdmae --models birdmae_huge --repeats 1
    python -m bench.bench_eat_birdmae --bf16                # also bfloat16 autocast at batch 8 + its error

Each (model, batch, dtype) runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``, weights
included) is its own. Weights are random (speed does not depend on them). EAT takes a 10-s clip in one
window; Bird-MAE's window is 5 s, so each 10-s clip is cut into two 5-s windows and both are run.
No comparison with avex is possible here: avex builds both models from the Hugging Face hub (remote code and
weights), which this machine cannot reach.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CLIP_SECONDS = 10.0
MODELS = {
    "eat": ("eat", {}),
    "birdmae_base": ("birdmae", {"birdmae_variant": "base"}),
    "birdmae_huge": ("birdmae", {"birdmae_variant": "huge"}),
}


def windows_for(model, clips: torch.Tensor) -> torch.Tensor:
    """10-s clips -> the model's input windows (Bird-MAE: two 5-s windows per clip)."""
    window = model.window_samples
    if clips.shape[-1] <= window:
        return clips
    return clips.unfold(-1, window, window).reshape(-1, window)


def run_one(model_key: str, batch: int, repeats: int, bf16: bool, threads: int) -> dict:
    from rl_core.loading import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cls_name, kwargs = MODELS[model_key]
    model = build_model(cls_name, **kwargs).eval()
    sr = model.sample_rate
    t = torch.arange(int(CLIP_SECONDS * sr)) / sr
    clips = torch.stack([0.1 * torch.randn(t.numel()) + 0.2 * torch.sin(2 * torch.pi * (800 + 300 * i) * t)
                         for i in range(batch)])
    x = windows_for(model, clips)

    def forward() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(x).float()

    out = forward()  # warm-up (also oneDNN kernel selection)
    start = time.perf_counter()
    for _ in range(repeats):
        out = forward()
    elapsed = time.perf_counter() - start
    result = {
        "model": model_key, "batch": batch, "dtype": "bfloat16-autocast" if bf16 else "float32",
        "windows_per_batch": x.shape[0], "seconds_per_batch": elapsed / repeats,
        "audio_s_per_s": batch * CLIP_SECONDS * repeats / elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if bf16:  # accuracy of the bfloat16 path against float32 on the same input
        with torch.inference_mode():
            ref = model(x)
        result["max_abs_err_vs_fp32"] = (out - ref).abs().max().item()
        result["min_cosine_vs_fp32"] = torch.nn.functional.cosine_similarity(out, ref, dim=-1).min().item()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["eat", "birdmae_base"], choices=sorted(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also time bfloat16 autocast at the largest batch")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(**json.loads(args.child))))
        return
    jobs = [(m, b, False) for m in args.models for b in args.batches]
    if args.bf16:
        jobs += [(m, max(args.batches), True) for m in args.models]
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} timed repeats after one warm-up")
    print(f"{'model':<14}{'batch':>6}  {'dtype':<18}{'s/batch':>9}{'audio s/s':>11}{'peak RSS MB':>13}  bf16 vs fp32")
    for model_key, batch, bf16 in jobs:
        spec = {"model_key": model_key, "batch": batch, "repeats": args.repeats, "bf16": bf16,
                "threads": args.threads}
        proc = subprocess.run([sys.executable, "-m", "bench.bench_eat_birdmae", "--child", json.dumps(spec)],
                              capture_output=True, text=True, check=True, cwd=REPO)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        extra = (f"max|d|={r['max_abs_err_vs_fp32']:.3g} min cos={r['min_cosine_vs_fp32']:.5f}"
                 if bf16 else "")
        print(f"{r['model']:<14}{r['batch']:>6}  {r['dtype']:<18}{r['seconds_per_batch']:>9.2f}"
              f"{r['audio_s_per_s']:>11.1f}{r['peak_rss_mb']:>13.0f}  {extra}", flush=True)


if __name__ == "__main__":
    main()
