"""Where one archive-project worker's time goes, stage by stage: BirdNET on the bench_archive folder, in this process
as a worker runs it (``rl_core.project.engines.analyse_file``, one thread), measured with cProfile in CPU seconds.

    .venv/bin/python -m bench.profile_archive_worker [--files 12] [--folder DIR]

Without ``--folder`` it makes the first ``--files`` recordings of bench_archive's folder (every rate, format and
channel count appears in 12). Stages are the cumulative times of the functions that do them; "the rest" is the
file's total minus the stages (window slicing, score extraction, float16 embeddings, Python glue).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

#: stage -> (file name ending, function name) in cProfile's keys
STAGES = {
    "header and completeness checks (audio_info)": ("rl_core/audio.py", "audio_info"),
    "decode and downmix (soundfile)": ("rl_core/audio.py", "_iter_native_blocks"),
    "resample, FFT rule per window": ("rl_core/resampling.py", "fft_resample"),
    "mel spectrograms (numpy MelFrontEnd)": ("rl_core/birdnet_litert.py", "__call__"),
    "LiteRT invoke (XNNPACK, from the first convolution)": ("~", "<built-in method ai_edge_litert._pywrap_litert_interpreter_wrapper.Invoke>"),
    "sigmoid": ("rl_core/birdnet_litert.py", "sigmoid"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--folder", default=None, help="recordings to analyse (default: bench_archive's, made here)")
    args = parser.parse_args()
    from rl_core.project.engines import _worker_model, analyse_file, init_worker
    from rl_core.project.store import FileTask, RunSettings, file_id_of

    init_worker()
    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="profile_archive_")) / "folder"
    if not args.folder:
        from bench.bench_archive import make_folder

        make_folder(folder, args.files, 60.0)
    files = sorted(p for p in folder.rglob("*.*") if p.is_file())[: args.files]
    settings = RunSettings("birdnet_v2_4")
    start = time.process_time()
    model = _worker_model(settings)
    print(f"model load: {time.process_time() - start:.2f} CPU s ({type(model).__name__})")
    profile = cProfile.Profile(time.process_time)  # CPU time: the stages of a busy shared machine still add up
    windows, wall, cpu = 0, time.perf_counter(), time.process_time()
    profile.enable()
    for path in files:
        outcome = analyse_file(FileTask(file_id_of(str(path)), str(path), str(folder), path.name, "", 1, 1), settings)
        assert outcome.ok, outcome.reason
        windows += len(outcome.starts)
    profile.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = pstats.Stats(profile).stats
    total = sum(v[3] for k, v in stats.items() if k[2] == "analyse_file")
    print(f"{len(files)} files, {windows} windows: {wall:.2f} s wall, {cpu:.2f} CPU s "
          f"({1000 * cpu / windows:.1f} CPU ms per 3-s window); under cProfile {total:.2f} s")
    print("| stage | s | ms per window | share |")
    print("|---|---|---|---|")
    accounted = 0.0
    for stage, (file_end, function) in STAGES.items():
        seconds = sum(v[3] for k, v in stats.items() if k[0].endswith(file_end) and k[2] == function)
        accounted += seconds
        print(f"| {stage} | {seconds:.2f} | {1000 * seconds / windows:.1f} | {seconds / total:.0%} |")
    rest = total - accounted
    print(f"| the rest | {rest:.2f} | {1000 * rest / windows:.1f} | {rest / total:.0%} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
