"""The app under load: 8 gradio_client clients sending 10-s clips to /predict (BirdNET), one worker vs one per core.

Run from the repository root:  .venv/bin/python -m bench.bench_app_load [--clients 8] [--requests 6] [--workers 1 2]
``--workers 1`` is the reference (every model request shares one slot, as before issue 16); the default
(one per usable core) lets BirdNET serve that many requests at once, one LiteRT interpreter each.
Prints requests/s, p50 and p95 latency per setting and their ratios (goal: >= 1.8x requests/s on 2 cores,
p95 down).

``--before DIR``: also measure, first and as the reference, the app of another checkout, e.g. the one before
issue 16 (``git worktree add /tmp/before16 0a9d723``), which served every model request in one slot.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.bench_app import MODEL, ten_second_clip
from tests.app_runner import RunningApp

REPO = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def load_round(url: str, clip: Path, clients: int, requests: int) -> tuple[list[float], list[BaseException], float]:
    """``clients`` threads, each with its own Client, each sending ``requests`` clips back to back."""
    from gradio_client import Client, handle_file

    latencies: list[float] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)

    def client_loop() -> None:
        client = Client(url, verbose=False)
        ready.wait()
        for _ in range(requests):
            t = time.perf_counter()
            try:
                status, summary, *_ = client.predict([handle_file(str(clip))], "", MODEL, 5, api_name="/predict")
                if "nalysed 1 file" not in status or "Hydrobates pelagicus" not in str(summary):
                    raise RuntimeError(f"unexpected answer: {status}")
                with lock:
                    latencies.append(time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001 - counted
                with lock:
                    failures.append(exc)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, failures, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=6, help="per client")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="settings to compare (default: 1 and one per usable core)")
    parser.add_argument("--before", type=Path, default=None, metavar="DIR",
                        help="a checkout of the app before issue 16, measured first as the reference")
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    cores = len(os.sched_getaffinity(0))
    settings = args.workers or [1, cores]
    work = Path(tempfile.mkdtemp(prefix="bench_load_"))
    clip = ten_second_clip(work)
    print(f"machine: {os.cpu_count()} CPUs ({cores} usable), load average {os.getloadavg()[0]:.1f} at start; "
          f"{args.clients} clients x {args.requests} requests of a 10-s clip ({MODEL})")
    figures = {}
    runs = ([("before", args.before)] if args.before else []) + [(workers, None) for workers in settings]
    for workers, app_dir in runs:
        flags = ("--preload", MODEL, "--no-warmup") + (("--workers", str(workers)) if app_dir is None else ())
        app = RunningApp(*flags, log_path=work / f"app_{workers}.log", app_dir=app_dir)
        try:
            app.wait_ready()
            warm = Client(app.url, verbose=False)
            for _ in range(2):  # warm BirdNET, the resampler, plotly
                warm.predict([handle_file(str(clip))], "", MODEL, 5, api_name="/predict")
            latencies, failures, wall = load_round(app.url, clip, args.clients, args.requests)
        finally:
            app.stop()
        rate = len(latencies) / wall
        p50, p95 = statistics.median(latencies), percentile(latencies, 0.95)
        figures[workers] = (rate, p50, p95)
        name = f"before ({args.before})" if workers == "before" else f"--workers {workers}"
        print(f"{name}: {len(latencies)} ok, {len(failures)} failed, wall {wall:.1f} s, "
              f"{rate:.2f} requests/s, latency p50 {p50:.2f} s, p95 {p95:.2f} s")
        for exc in failures[:3]:
            print(f"  failure: {exc!r}")
    reference = "before" if args.before else settings[0]
    base = figures[reference]
    for workers in [w for w, _ in runs if w != reference]:
        rate, p50, p95 = figures[workers]
        print(f"--workers {workers} vs {reference}: requests/s x{rate / base[0]:.2f}, p50 x{p50 / base[1]:.2f}, "
              f"p95 x{p95 / base[2]:.2f} (goal: requests/s >= 1.8x, p95 down)")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
