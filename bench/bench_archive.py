"""Archive projects on this CPU: throughput (workers vs one worker vs official birdnet), RSS per worker, store size,
float16 embeddings, resume of a finished 1,000-file project, export of 1 M detections.

    .venv/bin/python -m bench.bench_archive [--files 60] [--seconds 60] [--resume-files 1000] [--detections 1000000]

The folder is made of the bundled real recordings (pykanto's storm petrels and great tits, tiled with faint
noise): one-minute files at 48, 44.1, 32 and 96 kHz, as WAV, FLAC and MP3, mono and stereo. The 1 M detections
of the export figure are synthetic rows committed through the store's own commit path (the real model would
need hours to produce them here). Figures: ratios are within this run; the 2-core machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bench._recordings import song_tile
from rl_core.project import ProjectStore, RunSettings, analyse_project
from rl_core.project.engines import LocalEngine, physical_cores

HERE = Path(__file__).resolve().parent

RATES = [48000, 44100, 32000, 96000]
FORMATS = [("wav", "PCM_16"), ("flac", "PCM_16"), ("mp3", None)]
BIRDNET_PYTHON = "/work/birdnet-venv/bin/python"


def make_folder(folder: Path, files: int, seconds: float) -> float:
    """``files`` recordings of ``seconds`` s cycling rates, formats and channel counts; returns audio seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    tiles = {sr: song_tile(sr) for sr in RATES}
    rng = np.random.default_rng(0)
    total = 0.0
    for i in range(files):
        ext, subtype = FORMATS[i % len(FORMATS)]
        sr = RATES[i % len(RATES)]
        if ext == "mp3" and sr > 48000:  # MPEG audio stops at 48 kHz
            sr = 48000
        channels = 1 + (i // 2) % 2
        n = int(seconds * sr)
        tile = np.roll(tiles[sr], int(rng.integers(0, len(tiles[sr]))))
        audio = np.resize(tile, n) + (rng.standard_normal(n) * 0.003).astype(np.float32)
        audio = np.clip(audio, -1, 1).astype(np.float32)
        data = np.stack([audio, audio * 0.7], axis=1) if channels == 2 else audio
        site = folder / f"site{i % 3}"
        site.mkdir(exist_ok=True)
        name = site / f"2024051{5 + i % 3}_{6 + i % 4:02d}{i % 60:02d}00.{ext}"
        if ext == "mp3":
            sf.write(name, data, sr, format="MP3")
        else:
            sf.write(name, data, sr, subtype=subtype)
        total += seconds
    return total


class RssSampler:
    """Peak RSS and peak USS (memory private to the process: torch's shared libraries are counted in RSS of every
    worker but loaded once) of each worker process of a LocalEngine, sampled every 0.3 s."""

    def __init__(self, engine: LocalEngine) -> None:
        import psutil

        self.psutil, self.engine, self.peak, self.uss, self._stop = psutil, engine, {}, {}, threading.Event()
        self.cpu: dict[int, float] = {}  # CPU seconds (user + system) of each worker at its last sample
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.engine.worker_pids():
                try:
                    process = self.psutil.Process(pid)
                    info = process.memory_full_info()
                    times = process.cpu_times()
                except Exception:  # noqa: BLE001 - the process just ended
                    continue
                self.peak[pid] = max(self.peak.get(pid, 0), info.rss)
                self.uss[pid] = max(self.uss.get(pid, 0), info.uss)
                self.cpu[pid] = times.user + times.system
            time.sleep(0.3)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def timed_analysis(folder: Path, project: Path, workers: int) -> tuple[float, dict, object]:
    engine = LocalEngine(workers)
    with RssSampler(engine) as sampler:
        start, cpu, children = time.perf_counter(), time.process_time(), children_cpu()
        summary = analyse_project([folder], project, RunSettings("birdnet_v2_4"), engine=engine)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    worker_cpu = children_cpu() - children  # the pool's processes, joined when the run ends
    print(f"  {workers} worker(s): {wall:.1f} s wall; CPU s: workers {worker_cpu:.1f} (startup, imports and model "
          f"load included), driver {cpu:.1f} (scan, commits, and this bench's memory sampler)")
    return wall, (sampler.peak, sampler.uss), summary, worker_cpu


def children_cpu() -> float:
    """User + system CPU seconds of this process's finished (waited-for) child processes, their children included."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def official(folder: Path, work: Path) -> dict | str:
    if not Path(BIRDNET_PYTHON).is_file():
        return f"SKIPPED: {BIRDNET_PYTHON} does not exist (another helper creates the venv with birdnet==1.3.1)"
    from rl_core.models.birdnet import LABELS_FILE, MODEL_FILE, birdnet_dir

    listing = work / "files.txt"
    listing.write_text("\n".join(str(p) for p in sorted(folder.rglob("*.*"))) + "\n")
    cmd = [BIRDNET_PYTHON, str(HERE / "_official_birdnet_files.py"), "--model", str(birdnet_dir() / MODEL_FILE),
           "--labels", str(birdnet_dir() / LABELS_FILE), "--list", str(listing)]
    start, children = time.perf_counter(), children_cpu()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - children
    if out.returncode != 0:
        return f"FAILED: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    payload["wall_s"], payload["cpu_s"] = wall, cpu
    return payload


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def float16_quality(folder: Path) -> tuple[float, int]:
    """Top-10 cosine neighbours with float16 embeddings vs float32, on real windows (hop 1 s)."""
    from rl_core.cache import get_model
    from rl_core.inference import analyse_recording

    model = get_model("birdnet_v2_4")
    files = sorted(folder.rglob("*.wav"))[:2]
    emb = np.concatenate([analyse_recording(model, f, hop_s=1.0, want_scores=False).embeddings for f in files])

    def neighbours(x: np.ndarray) -> np.ndarray:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return np.argsort(-(x @ x.T), axis=1)[:, 1:11]

    a, b = neighbours(emb.astype(np.float32)), neighbours(emb.astype(np.float16).astype(np.float32))
    return float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b)])), emb.shape[0]


def resume_bench(work: Path, n: int) -> dict:
    folder = work / "many"
    folder.mkdir()
    tile = song_tile(48000)
    rng = np.random.default_rng(1)
    for i in range(n):
        start = int(rng.integers(0, len(tile) - 3 * 48000))
        sf.write(folder / f"{i:05d}.wav", tile[start:start + 3 * 48000], 48000, subtype="PCM_16")
    project = work / "many_project"
    start = time.perf_counter()
    first = analyse_project([folder], project, RunSettings("birdnet_v2_4", embeddings=True))
    analyse_s = time.perf_counter() - start
    times = []
    for _ in range(3):
        start = time.perf_counter()
        again = analyse_project([folder], project, RunSettings("birdnet_v2_4"))
        times.append(time.perf_counter() - start)
        assert again.done == 0 and again.skipped_done == n, again
    return {"files": n, "first_analysis_s": analyse_s, "done": first.done, "resume_s": times}


def export_bench(work: Path, detections: int) -> dict:
    from rl_core.detection_filters import birdnet_species, common_names
    from rl_core.project.exports import export_project
    from rl_core.project.store import FileOutcome, FileTask, file_id_of

    project = work / "export_project"
    labels, common = tuple(birdnet_species()), tuple(common_names("en"))
    per_file, windows = 100, 100  # 100 files' worth per commit, 100 windows of 3 s per file, 1 detection each
    files = detections // windows
    rng = np.random.default_rng(2)
    settings = RunSettings("birdnet_v2_4", embeddings=False)
    start = time.perf_counter()
    with ProjectStore(project) as store:
        run = store.ensure_run(settings, window_s=3.0)
        for batch in range(0, files, per_file):
            outcomes = []
            for i in range(batch, min(files, batch + per_file)):
                path = f"/archive/site{i % 10}/20240515_{i % 24:02d}0000_{i:05d}.wav"
                task = FileTask(file_id_of(path), path, "/archive", path[len("/archive/"):], f"archive/site{i % 10}", 1, 1)
                starts = np.arange(windows) * 3.0
                outcomes.append(FileOutcome(
                    task, True, duration_s=windows * 3.0, sample_rate=48000, channels=1, window_s=3.0, starts=starts,
                    ends=starts + 3.0, score_window=np.arange(windows, dtype=np.int32),
                    score_class=rng.integers(0, 6000, windows).astype(np.int16),
                    score_value=rng.uniform(0.3, 1.0, windows).astype(np.float32),
                    labels=labels if i == 0 else None, common_names=common if i == 0 else None))
            store.commit(run, outcomes)
    build_s = time.perf_counter() - start
    timings = {}
    for fmt in ("csv", "raven"):
        start = time.perf_counter()
        written = export_project(project, work / f"export_{fmt}", formats=[fmt])
        timings[fmt] = time.perf_counter() - start
        timings[f"{fmt}_files"] = len(written[fmt])
        timings[f"{fmt}_mb"] = sum(p.stat().st_size for p in written[fmt]) / 1e6
    return {"detections": files * windows, "files": files, "build_s": build_s, **timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--resume-files", type=int, default=1000)
    parser.add_argument("--detections", type=int, default=1_000_000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "official", "resume", "export"])
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress lines show while the bench runs, also through a pipe
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_archive_"))
    print(f"machine: {os.cpu_count()} logical CPUs, {physical_cores()} physical cores; load average "
          f"{os.getloadavg()[0]:.1f} at start (shared machine)")
    try:
        folder = work / "folder"
        made = work / "folder.json"  # with --work, a rerun reuses the folder made with the same arguments
        if made.is_file() and json.loads(made.read_text()) == [args.files, args.seconds]:
            audio_s = args.files * args.seconds
        else:
            shutil.rmtree(folder, ignore_errors=True)
            audio_s = make_folder(folder, args.files, args.seconds)
            made.write_text(json.dumps([args.files, args.seconds]))
        for old in ("p_default", "p_one", "many", "many_project", "export_project", "export_csv", "export_raven"):
            shutil.rmtree(work / old, ignore_errors=True)  # results of an earlier run with --work
        print(f"folder: {args.files} files, {audio_s / 60:.0f} min of audio, {folder_bytes(folder) / 1e6:.0f} MB "
              f"(rates {RATES}, wav/flac/mp3, mono/stereo)")
        if "throughput" not in args.skip:
            default = physical_cores()
            wall_d, rss_d, sum_d, cpu_d = timed_analysis(folder, work / "p_default", default)
            wall_1, rss_1, sum_1, cpu_1 = timed_analysis(folder, work / "p_one", 1)
            print("| engine | workers | wall s | audio s/s | vs one worker | peak RSS / private (USS) per worker (MB) |")
            print("|---|---|---|---|---|---|")
            print(f"| local (default) | {default} | {wall_d:.1f} | {audio_s / wall_d:.1f} | {wall_1 / wall_d:.2f}x | "
                  f"{', '.join(f'{r / 1e6:.0f} / {u / 1e6:.0f}' for r, u in zip(rss_d[0].values(), rss_d[1].values()))} |")
            print(f"| local | 1 | {wall_1:.1f} | {audio_s / wall_1:.1f} | 1.00x | "
                  f"{', '.join(f'{r / 1e6:.0f} / {u / 1e6:.0f}' for r, u in zip(rss_1[0].values(), rss_1[1].values()))} |")
            assert sum_d.done == sum_1.done == args.files, (sum_d, sum_1)
            if "official" not in args.skip:
                result = official(folder, work)
                if isinstance(result, str):
                    print(f"official birdnet 1.3.1: {result}")
                else:
                    print(f"| official birdnet {result['version']} (its defaults) | default | {result['wall_s']:.1f} "
                          f"(predict {result['predict_s']:.1f}) | {audio_s / result['wall_s']:.1f} | "
                          f"rl_core default is {result['wall_s'] / wall_d:.2f}x faster (wall), "
                          f"{result['predict_s'] / wall_d:.2f}x (vs its predict only) | - |")
                    print(f"CPU seconds for the {audio_s / 60:.0f} min of audio (load-independent work): official "
                          f"{result['cpu_s']:.1f}, rl_core workers {cpu_d:.1f} with {default}, {cpu_1:.1f} with 1 "
                          f"(official / rl_core: {result['cpu_s'] / cpu_d:.2f}x, {result['cpu_s'] / cpu_1:.2f}x)")
            db = (work / "p_default" / "project.duckdb").stat().st_size
            emb = folder_bytes(work / "p_default" / "embeddings")
            with ProjectStore(work / "p_default", read_only=True) as store:
                run = store.default_run()
                n_windows = store.summary(run)["windows"]
                n_scores = store.con.execute("select count(*) from scores").fetchone()[0]
            hours = audio_s / 3600
            print(f"store: {n_windows} windows, {n_scores} scores >= floor ({n_scores / n_windows:.0f} per window); "
                  f"duckdb {db / 1e6:.1f} MB, embeddings (Parquet float16 zstd) {emb / 1e6:.1f} MB; "
                  f"{emb / n_windows:.0f} B/window embeddings, {db / n_windows:.0f} B/window tables; "
                  f"{(db + emb) / hours / 1e6:.1f} MB per audio-hour")
            overlap, n = float16_quality(folder)
            print(f"float16 embeddings: top-10 cosine neighbours equal to float32 for {overlap:.1%} ({n} real windows)")
        if "resume" not in args.skip:
            result = resume_bench(work, args.resume_files)
            print(f"resume: {result['files']} files analysed in {result['first_analysis_s']:.1f} s; resuming the "
                  f"finished project took {', '.join(f'{t:.2f}' for t in result['resume_s'])} s (3 runs)")
        if "export" not in args.skip:
            result = export_bench(work, args.detections)
            print(f"export: {result['detections']:,} detections in {result['files']:,} files (synthetic, built in "
                  f"{result['build_s']:.1f} s): CSV {result['csv']:.1f} s ({result['csv_mb']:.0f} MB), Raven "
                  f"{result['raven']:.1f} s ({result['raven_files']:,} tables incl. combined, {result['raven_mb']:.0f} MB)")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
