"""Soak test: 8 gradio_client clients against `python app.py` on 127.0.0.1 for a few minutes; nothing may grow
without bound.

Run from the repository root:  .venv/bin/python -m bench.soak_app [--minutes 4] [--clients 8]
Each client loops over /predict (a 10-s clip), /embedding_map (a zip of 4 songs, PCA) and, every fifth turn, a
broken upload and a request cancelled mid-job (gradio_client cancel). The app runs with its own temporary
folder (TMPDIR), so the disk figures are those of its folders alone: Gradio's uploads and cache, the output
folders and unpacked zips. Prints the server's RSS and that disk use before, during (per minute) and after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import psutil

from bench.bench_app import MODEL, server_rss_mb, ten_second_clip
from tests.app_runner import RunningApp
from ui.common import folder_bytes

REPO = Path(__file__).resolve().parent.parent


def folder_mb(folder: Path) -> float:
    return folder_bytes(folder) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-output-size", default="20MB", help="the app's --max-output-size for the run")
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    from rl_core.datasets_bundled import great_tit_songs

    work = Path(tempfile.mkdtemp(prefix="soak_app_"))
    app_tmp = work / "app_tmp"
    app_tmp.mkdir()
    clip = ten_second_clip(work)
    songs = work / "songs.zip"
    with zipfile.ZipFile(songs, "w") as archive:
        for song in great_tit_songs()[:2] + great_tit_songs()[-2:]:
            archive.write(song.path, f"{song.label}/{song.path.name}")
    broken = work / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x01\x00\x00WAVE not audio" * 10)

    os.environ["TMPDIR"] = str(app_tmp)  # the app's uploads, Gradio cache and output folders all land here
    app = RunningApp("--preload", MODEL, "--no-warmup", "--max-output-size", args.max_output_size,
                     log_path=work / "app.log")
    del os.environ["TMPDIR"]
    counts = {"predict": 0, "map": 0, "broken+cancelled": 0, "failed": 0}
    lock = threading.Lock()
    try:
        app.wait_ready()
        server = psutil.Process(app.proc.pid)
        warm = Client(app.url, verbose=False)
        warm.predict([handle_file(str(clip))], "", MODEL, 5, api_name="/predict")
        map_args = (None, handle_file(str(songs)), None, False, MODEL, "last_layer", "mean", "PCA", 15, 0.1,
                    "euclidean", 30)
        warm.predict(*map_args, api_name="/embedding_map")
        rss_start, disk_start = server_rss_mb(server), folder_mb(app_tmp)
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.clients} clients for "
              f"{args.minutes:g} min; after warm-up: server RSS {rss_start:.0f} MB, app folders {disk_start:.1f} MB")
        deadline = time.time() + 60 * args.minutes

        def client_loop(seed: int) -> None:
            client = Client(app.url, verbose=False)
            turn = seed
            while time.time() < deadline:
                turn += 1
                try:
                    if turn % 5 == 0:
                        try:
                            client.predict([handle_file(str(broken))], "", MODEL, 3, api_name="/predict")
                        except Exception:  # noqa: BLE001 - a broken-only upload is reported as an error
                            pass
                        job = Client(app.url, verbose=False).submit([handle_file(str(clip))] * 3, "", MODEL, 3,
                                                                    api_name="/predict")
                        time.sleep(1.0)
                        job.cancel()
                        kind = "broken+cancelled"
                    elif turn % 2 == 0:
                        client.predict(*map_args, api_name="/embedding_map")
                        kind = "map"
                    else:
                        status, *_ = client.predict([handle_file(str(clip))], "", MODEL, 5, api_name="/predict")
                        kind = "predict" if "Analysed 1 file" in status else "failed"
                except Exception as exc:  # noqa: BLE001 - counted
                    kind = "failed"
                    print(f"  failure: {exc!r}"[:300])
                with lock:
                    counts[kind] += 1

        threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(args.clients)]
        for t in threads:
            t.start()
        next_report = time.time() + 60
        while any(t.is_alive() for t in threads):
            time.sleep(2)
            if time.time() >= next_report:
                next_report += 60
                print(f"  {time.strftime('%H:%M:%S')}: RSS {server_rss_mb(server):.0f} MB, app folders "
                      f"{folder_mb(app_tmp):.1f} MB (outputs {folder_mb(app_tmp / 'rl_app_outputs'):.1f} MB, "
                      f"Gradio {folder_mb(app_tmp / 'gradio'):.1f} MB), done {dict(counts)}", flush=True)
        for t in threads:
            t.join(timeout=120)
        time.sleep(5)
        rss_end, disk_end = server_rss_mb(server), folder_mb(app_tmp)
        outputs = app_tmp / "rl_app_outputs"
        scratch = [p.name for p in outputs.iterdir() if p.name.startswith("scratch")] if outputs.exists() else []
        print(f"requests: {dict(counts)}")
        print(f"server RSS: {rss_start:.0f} MB after warm-up -> {rss_end:.0f} MB after the soak "
              f"({rss_end - rss_start:+.0f} MB)")
        print(f"app folders: {disk_start:.1f} MB -> {disk_end:.1f} MB ({disk_end - disk_start:+.1f} MB; outputs "
              f"{folder_mb(outputs):.1f} MB, bound {args.max_output_size}; Gradio uploads and cache "
              f"{folder_mb(app_tmp / 'gradio'):.1f} MB); unpacked-zip folders left: {len(scratch)}")
        print(f"tracebacks in the server log: {app.output().count('Traceback')}")
    finally:
        app.stop()
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
