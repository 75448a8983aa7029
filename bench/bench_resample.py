"""Resampling speed and agreement: rl_core.audio.resample against librosa's kaiser_best, on a real recording.

    cd <repo> && .venv/bin/python -m bench.bench_resample [--seconds 60] [--repeats 3]

The storm-petrel recording of the
pykanto wheel is tiled to ``--seconds`` and resampled between common rates (44.1 and 96 kHz are first made from it
with kaiser_best). Reported per rate pair: the best of ``--repeats`` warm runs (librosa's numba code compiled
first) of librosa ``kaiser_best, scale=True``, of rl_core's ``"kaiser_best"`` (torchaudio) and of ``"fft"`` as
BirdNET applies it (each 3-s window alone), wall and CPU seconds, the speed ratios, and rl_core's difference from librosa (RMS relative to
librosa's output RMS, 100 samples from the edges, and the largest absolute difference over the whole output).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

PAIRS = [(44100, 48000), (44100, 16000), (22050, 32000), (32000, 48000), (96000, 48000), (22050, 48000)]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _best(run, repeats: int) -> tuple[float, float, np.ndarray]:
    """(best wall seconds, best CPU seconds, output) over ``repeats`` runs."""
    times, cpu, out = [], [], None
    for _ in range(repeats):
        cpu0, start = _cpu_seconds(), time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
        cpu.append(_cpu_seconds() - cpu0)
    return min(times), min(cpu), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import librosa
    import soundfile as sf

    from rl_core.resampling import resample
    from rl_core.datasets_bundled import storm_petrel_recordings

    real, sr = sf.read(str(storm_petrel_recordings()[0]), dtype="float32")
    assert sr == 44100
    base = np.resize(real, int(args.seconds * sr))
    sources = {44100: base}
    librosa.resample(base[:4410], orig_sr=44100, target_sr=48000, res_type="kaiser_best")  # compile numba once
    print(f"{args.seconds:.0f} s of a real 44.1 kHz recording (storm petrel XC46092, tiled); best of {args.repeats}")
    print("| rate pair | librosa kaiser_best s (CPU s) | rl_core kaiser_best s (CPU s) | speed-up wall (CPU) "
          "| audio s/s (rl_core, wall) | RMS diff (relative) | max abs diff | fft per 3-s window s (CPU s) |")
    print("|---|---|---|---|---|---|---|---|")
    for orig, target in PAIRS:
        if orig not in sources:
            sources[orig] = resample(base, 44100, orig)
        x = sources[orig]
        t_ref, c_ref, ref = _best(lambda: librosa.resample(x, orig_sr=orig, target_sr=target, res_type="kaiser_best",
                                                    scale=True), args.repeats)
        t_ours, c_ours, ours = _best(lambda: resample(x, orig, target, "kaiser_best"), args.repeats)
        seg = 3 * orig
        t_fft, c_fft, _ = _best(lambda: [resample(x[i:i + seg], orig, target, "fft") for i in range(0, x.shape[0], seg)],
                         args.repeats)
        assert ours.shape == ref.shape
        core = slice(100, -100)
        rel = np.sqrt(np.mean((ours[core] - ref[core]) ** 2)) / np.sqrt(np.mean(ref[core] ** 2))
        print(f"| {orig / 1000:g} -> {target / 1000:g} kHz | {t_ref:.3f} ({c_ref:.3f}) | {t_ours:.3f} ({c_ours:.3f}) "
              f"| {t_ref / t_ours:.0f}x ({c_ref / max(c_ours, 1e-3):.0f}x) | {args.seconds / t_ours:.0f} | {rel:.1e} "
              f"| {np.abs(ours - ref).max():.1e} | {t_fft:.3f} ({c_fft:.3f}) |", flush=True)


if __name__ == "__main__":
    main()
