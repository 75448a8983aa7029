"""BirdNET V2.4 on this CPU: rl_core vs the official ``birdnet`` package, at several sample rates, plus score parity.

    cd <repo> && .venv/bin/python -m bench.bench_birdnet [--seconds 600] [--rounds 3]
        [--rates 48000,44100,32000] [--birdnet-python PATH] [--write-fixture tests/fixtures/birdnet_official_scores.json]

Throughput: for each rate, one recording of ``--seconds`` seconds, 16-bit, is generated in a temp dir (the real
pykanto songs at that rate, tiled with faint noise; ``bench/_recordings.py``). Each variant runs the whole file;
variants are interleaved round by round in rotated order (the CPU is shared), and the best and median rounds are
reported, with CPU seconds. Timings exclude model loading:

* ours: ``rl_core.inference.analyse_recording(model, path)`` (decode, resampling with ``model.resampling``,
  windowing, inference, scores and embeddings);
* official: ``birdnet==1.3.1`` ``load_custom(..., library="litert")`` on the same .tflite and labels, its
  ``predict`` with default workers (physical cores) and batch 1, run by ``bench/peer/official_birdnet_runner.py``
  with the interpreter of a separate venv (``--birdnet-python``, default /work/birdnet-venv/bin/python); skipped,
  with the reason printed, when that interpreter is missing.

Parity: both score the real recordings in ``PARITY_FILES`` (44.1, 32 and 22.05 kHz); for each official top-10
species of each 3-s segment, |ours - official| is reported. ``--write-fixture`` stores the official scores for
``tests/test_birdnet.py``.
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
#: real recordings at rates other than 48 kHz: (package, path inside it)
PARITY_FILES = [
    ("pykanto", "data/raw/STORM-PETREL/XC46092.wav"),  # 44.1 kHz
    ("pykanto", "data/raw/STORM-PETREL/XC663885.wav"),  # 44.1 kHz
    ("pykanto", "data/raw/BENGALESE_FINCH/bird_3/348.wav"),  # 32 kHz
    ("pykanto", "data/raw/BENGALESE_FINCH/bird_3/363.wav"),  # 32 kHz
    ("vocalpy", "examples/bl26lb16.wav"),  # 32 kHz
    ("pykanto", "data/segmented/great_tit/WAV/2021-SW83-0418_04-79.wav"),  # 22.05 kHz
]
PARITY_TOP_K = 10


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

    return model, load_s, run


def official_run(python: str, paths: list[Path], batch_size: int = 1, n_workers: int | None = None,
                 top_k: int = 1) -> dict:
    from rl_core.models.birdnet import LABELS_FILE, MODEL_FILE, birdnet_dir

    folder = birdnet_dir()
    cmd = [python, str(HERE / "peer" / "official_birdnet_runner.py"), "--model", str(folder / MODEL_FILE),
           "--labels", str(folder / LABELS_FILE), "--batch-size", str(batch_size), "--top-k", str(top_k)]
    for path in paths:
        cmd += ["--file", str(path)]
    if n_workers:
        cmd += ["--n-workers", str(n_workers)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"official birdnet failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def score_differences(model, official_file: dict, path: Path) -> tuple[float, float]:
    """(max |ours - official| over the official top-k of every segment, same with kaiser_best resampling)."""
    from rl_core.inference import analyse_recording

    diffs = []
    for resampling in (model.resampling, "kaiser_best"):
        saved = model.audio_config
        model.audio_config = saved.model_copy(update={"resampling": resampling})
        try:
            result = analyse_recording(model, path)
        finally:
            model.audio_config = saved
        # rl_core drops a last tail shorter than a quarter window, which the official package scores padded
        assert result.num_windows in (official_file["segments"], official_file["segments"] - 1)
        n = result.num_windows
        diffs.append(max(abs(float(result.scores[w, result.labels.index(name)]) - score)
                         for w, (names, scores) in enumerate(zip(official_file["species"][:n], official_file["scores"][:n]))
                         for name, score in zip(names, scores)))
    return diffs[0], diffs[1]


def parity(model, python: str, fixture: Path | None) -> None:
    import soundfile as sf

    from rl_core.datasets_bundled import package_dir

    paths = [package_dir(pkg) / rel for pkg, rel in PARITY_FILES]
    payload = official_run(python, paths, top_k=PARITY_TOP_K)
    print(f"\nScore parity with birdnet {payload['version']} (official top-{PARITY_TOP_K} species per 3-s segment)")
    print(f"| recording | rate (Hz) | segments | max abs diff, rl_core ({model.resampling}) "
          f"| max abs diff with kaiser_best |")
    print("|---|---|---|---|---|")
    for (pkg, rel), path, official_file in zip(PARITY_FILES, paths, payload["files"]):
        ours, kaiser = score_differences(model, official_file, path)
        print(f"| {pkg}:{rel} | {sf.info(str(path)).samplerate} | {official_file['segments']} | {ours:.2g} "
              f"| {kaiser:.3f} |")
    if fixture is not None:
        from rl_core.atomic import atomic_write

        record = {"birdnet": payload["version"], "top_k": PARITY_TOP_K, "files": [
            {"package": pkg, "path": rel, "species": f["species"], "scores": f["scores"]}
            for (pkg, rel), f in zip(PARITY_FILES, payload["files"])]}
        with atomic_write(fixture, "w") as handle:
            json.dump(record, handle)
        print(f"wrote {fixture}")


def throughput(args, variants: dict, official_name: str | None, rate: int) -> None:
    from bench._recordings import write_tiled_recording

    with tempfile.TemporaryDirectory(prefix="bench_birdnet_") as tmp:
        path = Path(tmp) / f"recording_{rate}.wav"
        start = time.perf_counter()
        write_tiled_recording(path, args.seconds, sample_rate=rate)
        print(f"\ngenerated {args.seconds:.0f} s at {rate} Hz (16-bit) in {time.perf_counter() - start:.1f} s")
        names = list(variants) + ([official_name] if official_name else [])
        times: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]  # rotate, so no variant always goes first
            for name in order:
                if name == official_name:
                    payload = official_run(args.birdnet_python, [path], 1, args.official_workers)["files"][0]
                    elapsed, cpu_s = payload["predict_s"][0], payload["predict_cpu_s"][0]
                else:
                    elapsed, cpu_s, _ = variants[name](path)
                times[name].append(elapsed)
                cpu[name].append(cpu_s)
                print(f"round {r + 1}: {name}: {elapsed:.2f} s wall, {cpu_s:.1f} CPU s "
                      f"({args.seconds / elapsed:.1f} audio s/s), load average {os.getloadavg()[0]:.1f}", flush=True)
    best = {name: min(ts) for name, ts in times.items()}
    median = {name: statistics.median(ts) for name, ts in times.items()}
    ref_best, ref_median = best.get(official_name), median.get(official_name)
    print(f"\nBirdNET V2.4 on {args.seconds:.0f} s of {rate} Hz audio, {args.rounds} interleaved round(s) "
          f"(model load excluded)")
    print("| variant | best s | audio s/s (best) | vs official (best) | median s | vs official (median) "
          "| CPU s (median) | all rounds (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        rb = f"{ref_best / best[name]:.2f}x" if ref_best else "n/a"
        rm = f"{ref_median / median[name]:.2f}x" if ref_median else "n/a"
        rounds = ", ".join(f"{x:.1f}" for x in times[name])
        print(f"| {name} | {best[name]:.2f} | {args.seconds / best[name]:.1f} | {rb} | {median[name]:.2f} | {rm} "
              f"| {statistics.median(cpu[name]):.1f} | {rounds} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0, help="length of each generated recording")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (best and median reported)")
    parser.add_argument("--rates", default="48000,44100,32000", help="sample rates of the generated recordings")
    parser.add_argument("--batch-sizes", default="1,8", help="rl_core batch sizes to run")
    parser.add_argument("--threads-1", action="store_true", help="also run ours at batch 1 with num_threads=1")
    parser.add_argument("--birdnet-python", default=DEFAULT_BIRDNET_PYTHON,
                        help="python of the venv holding birdnet==1.3.1 (official variant)")
    parser.add_argument("--official-workers", type=int, default=None, help="birdnet n_workers (default: its own)")
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--write-fixture", type=Path, default=None, help="store the official parity scores here")
    args = parser.parse_args()

    import platform

    import torch

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    variants = {}
    model = None
    for b in [int(x) for x in args.batch_sizes.split(",") if x]:
        built, load_s, run = ours_variant(b, None)
        model = model or built
        variants[f"rl_core analyse_recording, batch {b}"] = run
        print(f"loaded rl_core BirdNET batch {b} in {load_s:.2f} s (resampling: {built.resampling})")
    if args.threads_1:
        _, _, run = ours_variant(1, 1)
        variants["rl_core analyse_recording, batch 1, num_threads=1"] = run
    have_official = Path(args.birdnet_python).is_file()
    if not have_official:
        print(f"SKIPPED official birdnet: {args.birdnet_python} does not exist (create the venv: "
              f"python3 -m venv /work/birdnet-venv && /work/birdnet-venv/bin/pip install birdnet==1.3.1)")
    elif not args.skip_parity:
        parity(model, args.birdnet_python, args.write_fixture)
    official_name = (f"official birdnet 1.3.1 litert (batch 1, n_workers={args.official_workers or 'default'})"
                     if have_official else None)
    if not args.skip_throughput:
        for rate in [int(x) for x in args.rates.split(",") if x]:
            throughput(args, variants, official_name, rate)
    print("(vs official = official seconds / variant seconds: > 1 is faster than official. CPU s = user + system "
          "seconds of the process and, for official, its worker processes)")


if __name__ == "__main__":
    main()
