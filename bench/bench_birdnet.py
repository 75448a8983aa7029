"""BirdNET V2.4 throughput on this CPU: rl_core (batch 1, 8, 32) vs the official ``birdnet`` package.

    cd <repo> && .venv/bin/python -m bench.bench_birdnet [--seconds 600] [--rounds 2] [--birdnet-python PATH]

One 10-minute 48 kHz 16-bit recording is generated in a temp dir (the real pykanto songs resampled to 48 kHz and
tiled, plus faint noise). Each variant runs the whole file; variants are interleaved round by round, in rotated
order (the CPU is shared), and the best and median rounds are reported, with CPU seconds. Timings exclude model loading:

* ours: ``rl_core.inference.analyse_recording(model, path)`` (decode + windowing + inference, scores and embeddings);
* official: ``birdnet==1.3.1`` ``load_custom(..., library="litert")`` on the same .tflite and labels, its
  ``predict`` call with default workers (physical cores) and batch 1, run in a subprocess with the interpreter of
  a separate venv (``--birdnet-python``, default /work/birdnet-venv/bin/python); skipped with a printed reason when
  that interpreter is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

DEFAULT_BIRDNET_PYTHON = "/work/birdnet-venv/bin/python"


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ours_variant(batch_size: int, num_threads: int | None):
    from rl_core import build_model

    kwargs = {"batch_size": batch_size}
    if num_threads:
        kwargs["num_threads"] = num_threads
    start = time.perf_counter()
    model = build_model("birdnet_v2_4", **kwargs)
    load_s = time.perf_counter() - start

    def run(path: Path):
        from rl_core.inference import analyse_recording

        cpu0 = _cpu_seconds()
        start = time.perf_counter()
        result = analyse_recording(model, path)
        return time.perf_counter() - start, _cpu_seconds() - cpu0, result

    return load_s, run


def official_run(python: str, path: Path, batch_size: int, n_workers: int | None) -> dict:
    from rl_core.models.birdnet import LABELS_FILE, MODEL_FILE, birdnet_dir

    folder = birdnet_dir()
    cmd = [python, str(HERE / "_official_birdnet_runner.py"), "--model", str(folder / MODEL_FILE),
           "--labels", str(folder / LABELS_FILE), "--file", str(path), "--batch-size", str(batch_size)]
    if n_workers:
        cmd += ["--n-workers", str(n_workers)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"official birdnet failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the generated recording")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (best and median reported)")
    parser.add_argument("--batch-sizes", default="1,8,32", help="rl_core batch sizes to run")
    parser.add_argument("--threads-1", action="store_true", help="also run ours at batch 1 with num_threads=1")
    parser.add_argument("--birdnet-python", default=DEFAULT_BIRDNET_PYTHON,
                        help="python of the venv holding birdnet==1.3.1 (official variant)")
    parser.add_argument("--official-workers", type=int, default=None, help="birdnet n_workers (default: its own)")
    args = parser.parse_args()

    import torch
    import platform

    from bench._recordings import write_tiled_recording

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench_birdnet_") as tmp:
        path = Path(tmp) / "ten_minutes_48k.wav"
        start = time.perf_counter()
        write_tiled_recording(path, args.seconds)
        print(f"generated {args.seconds:.0f} s at 48 kHz (16-bit) in {time.perf_counter() - start:.1f} s: {path}")

        variants: dict[str, object] = {}
        for b in [int(x) for x in args.batch_sizes.split(",") if x]:
            load_s, run = ours_variant(b, None)
            variants[f"rl_core analyse_recording, batch {b}"] = run
            print(f"loaded rl_core BirdNET batch {b} in {load_s:.2f} s")
        if args.threads_1:
            load_s, run = ours_variant(1, 1)
            variants["rl_core analyse_recording, batch 1, num_threads=1"] = run

        official_name = f"official birdnet 1.3.1 litert (batch 1, n_workers={args.official_workers or 'default'})"
        have_official = Path(args.birdnet_python).is_file()
        if have_official:
            variants[official_name] = lambda p: official_run(args.birdnet_python, p, 1, args.official_workers)
        else:
            print(f"SKIPPED official birdnet: {args.birdnet_python} does not exist (create the venv: "
                  f"python3 -m venv /work/birdnet-venv && /work/birdnet-venv/bin/pip install birdnet==1.3.1)")

        times: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        ours_result = official_payload = None
        names = list(variants)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]  # rotate, so no variant always goes first
            for name in order:
                run = variants[name]
                if name == official_name:
                    payload = run(path)
                    elapsed, cpu_s = payload["predict_s"][0], payload["predict_cpu_s"][0]
                    official_payload = payload
                else:
                    elapsed, cpu_s, result = run(path)
                    if ours_result is None:
                        ours_result = result
                times[name].append(elapsed)
                cpu[name].append(cpu_s)
                print(f"round {r + 1}: {name}: {elapsed:.2f} s wall, {cpu_s:.1f} CPU s "
                      f"({args.seconds / elapsed:.1f} audio s/s), load average {os.getloadavg()[0]:.1f}", flush=True)

    best = {name: min(ts) for name, ts in times.items()}
    median = {name: statistics.median(ts) for name, ts in times.items()}
    ref_best, ref_median = best.get(official_name), median.get(official_name)
    print()
    print(f"BirdNET V2.4 on {args.seconds:.0f} s of 48 kHz audio, {args.rounds} interleaved round(s) "
          f"(model load excluded)")
    print(f"| {'variant':<60} | best s | audio s/s (best) | vs official (best) | median s | vs official (median) "
          f"| CPU s (median) | all rounds (s) |")
    print(f"|{'-' * 62}|--------|------------------|--------------------|----------|----------------------"
          f"|----------------|----------------|")
    for name in names:
        rb = f"{ref_best / best[name]:.2f}x" if ref_best else "n/a"
        rm = f"{ref_median / median[name]:.2f}x" if ref_median else "n/a"
        rounds = ", ".join(f"{x:.1f}" for x in times[name])
        print(f"| {name:<60} | {best[name]:6.2f} | {args.seconds / best[name]:16.1f} | {rb:>18} | "
              f"{median[name]:8.2f} | {rm:>20} | {statistics.median(cpu[name]):14.1f} | {rounds} |")
    print("(vs official = official seconds / variant seconds: > 1 is faster than official. CPU s = user + system "
          "seconds of the process and, for official, its worker processes)")
    if official_payload is not None:
        print(f"official load_custom took {official_payload['load_s']:.2f} s (version {official_payload['version']})")
    if ours_result is not None and official_payload is not None:
        import numpy as np

        ours_top = [ours_result.labels[i] for i in ours_result.scores.argmax(axis=1)]
        ours_score = ours_result.scores.max(axis=1)
        n = min(len(ours_top), official_payload["segments"])
        same = sum(a == b for a, b in zip(ours_top[:n], official_payload["top1"][:n]))
        diff = np.abs(ours_score[:n] - np.asarray(official_payload["top1_score"][:n])).max()
        print(f"agreement: top-1 species equal in {same}/{n} windows (ours {len(ours_top)}, official "
              f"{official_payload['segments']}); max |top-1 score difference| {diff:.4f}")


if __name__ == "__main__":
    main()
