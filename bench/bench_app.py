"""Web-app performance: start-up to first page load, warm BirdNET latency through gradio_client, concurrency.

Run from the repository root:  python -m bench.bench_app [--repeats 10] [--clients 8] [--requests 5]
Prints one line per figure; targets: start-up <= 10 s, warm 10-s clip median <= 1.5 s,
8 clients x 5 requests all succeed and the server's memory returns to its level after the first request.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import soundfile as sf

from tests.app_runner import RunningApp  # app.py in a subprocess on a free port (shared with the tests)

MODEL = "birdnet_v2_4"
CHROMIUM = "/usr/bin/chromium"


def ten_second_clip(folder: Path) -> Path:
    """The first 10 s of a real recording (xeno-canto storm-petrel, 44.1 kHz)."""
    from rl_core.datasets_bundled import storm_petrel_recordings

    audio, sr = sf.read(storm_petrel_recordings()[1], frames=10 * 44100, always_2d=True)
    path = folder / "clip_10s.wav"
    sf.write(path, audio.mean(axis=1), sr, subtype="PCM_16")
    return path


def startup_to_page(log_dir: Path) -> tuple[float, float, str]:
    """Seconds from `python app.py` to (HTTP 200 on /, page rendered in Chromium); the second is NaN without it."""
    browser = pw = None
    if Path(CHROMIUM).exists():
        from playwright.sync_api import sync_playwright

        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu",
                                                                      "--disable-background-networking"])
    t0 = time.perf_counter()
    app = RunningApp(log_path=log_dir / "startup.log")
    try:
        app.wait_ready(timeout=120)
        http_s = time.perf_counter() - t0
        page_s = float("nan")
        if browser is not None:
            page = browser.new_page()
            page.goto(app.url)
            page.wait_for_selector("#inf-run", timeout=60_000)
            page_s = time.perf_counter() - t0
        return http_s, page_s, app.url
    finally:
        app.stop()
        if browser is not None:
            browser.close()
            pw.stop()


def report_startup(starts: list[tuple[float, float, str]]) -> None:
    http = statistics.median(s[0] for s in starts)
    page = statistics.median(s[1] for s in starts)
    print(f"startup: python app.py -> HTTP 200 median {http:.2f} s; -> page rendered in Chromium median "
          f"{page:.2f} s (runs: {', '.join(f'{s[1]:.1f}' for s in starts)}; target <= 10 s)")


def server_rss_mb(proc: psutil.Process) -> float:
    """The server process's resident memory. Children are left out: the server keeps none, and a short-lived
    forked helper would count the parent's shared pages a second time."""
    return proc.memory_info().rss / 2**20


def print_gradio_phases(url: str, last: int) -> None:
    """Gradio's own times of the last ``last`` /predict calls (kept by a server started with GRADIO_PROFILING=1)."""
    import json

    with urllib.request.urlopen(url + "gradio_api/profiling/traces", timeout=10) as response:
        traces = [t for t in json.loads(response.read()) if t.get("fn_name") == "predict"][-last:]
    for phase in ("queue_wait_ms", "preprocess_ms", "fn_call_ms", "postprocess_ms", "total_ms"):
        print(f"  Gradio {phase[:-3]:<12} median {statistics.median(t[phase] for t in traces):6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--startups", type=int, default=3)
    parser.add_argument("--only-startup", action="store_true", help="measure the start-up time only")
    parser.add_argument("--only-latency", action="store_true",
                        help="measure the warm 10-s clip latency only (no start-up or concurrency rounds)")
    parser.add_argument("--gradio-phases", action="store_true",
                        help="also print Gradio's own median time per phase of /predict (GRADIO_PROFILING=1)")
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="bench_app_"))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")

    starts = [] if args.only_latency else [startup_to_page(work) for _ in range(args.startups)]
    if starts:
        report_startup(starts)
    if args.only_startup:
        return

    clip = ten_second_clip(work)
    app = RunningApp("--preload", MODEL, "--no-warmup", log_path=work / "app.log",
                     env={"GRADIO_PROFILING": "1"} if args.gradio_phases else None)
    try:
        app.wait_ready()
        server = psutil.Process(app.proc.pid)
        client = Client(app.url, verbose=False)

        def one_request(c: Client) -> float:
            t = time.perf_counter()
            status, summary, *_ = c.predict([handle_file(str(clip))], "", MODEL, 5, api_name="/predict")
            if "Analysed 1 file" not in status or "Hydrobates pelagicus" not in summary["data"][0][3]:
                raise RuntimeError(f"unexpected answer: {status} {summary}")
            return time.perf_counter() - t

        one_request(client)  # first request: warms BirdNET, resampler, plotly
        rss_after_first = server_rss_mb(server)
        cpu_before = sum(server.cpu_times()[:4]), sum(psutil.Process().cpu_times()[:2])
        latencies = [one_request(client) for _ in range(args.repeats)]
        cpu = [(after - before) / args.repeats * 1000 for before, after in
               zip(cpu_before, (sum(server.cpu_times()[:4]), sum(psutil.Process().cpu_times()[:2])))]
        print(f"warm 10-s clip via gradio_client ({MODEL}): median {statistics.median(latencies):.3f} s, "
              f"min {min(latencies):.3f}, max {max(latencies):.3f} over {args.repeats} (target median <= 0.3 s, "
              f"issue 12); CPU per request: server {cpu[0]:.0f} ms (with its child processes), this client {cpu[1]:.0f} ms")
        if args.gradio_phases:
            print_gradio_phases(app.url, args.repeats)
        if args.only_latency:
            return

        def run_round() -> tuple[list[float], list[BaseException], float, float]:
            results: list[float | BaseException] = []
            lock = threading.Lock()

            def client_loop() -> None:
                c = Client(app.url, verbose=False)
                for _ in range(args.requests):
                    try:
                        value: float | BaseException = one_request(c)
                    except BaseException as exc:  # noqa: BLE001 - counted as a failure
                        value = exc
                    with lock:
                        results.append(value)

            peak = [0.0]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], server_rss_mb(server))
                    time.sleep(0.2)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            threads = [threading.Thread(target=client_loop) for _ in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            stop.set()
            sampler.join()
            ok = [r for r in results if isinstance(r, float)]
            return ok, [r for r in results if not isinstance(r, float)], wall, peak[0]

        rss_rounds = []
        for round_no in (1, 2):
            ok, failed, wall, peak = run_round()
            time.sleep(5)
            rss_rounds.append(server_rss_mb(server))
            print(f"concurrency round {round_no}: {args.clients} clients x {args.requests} requests: {len(ok)} "
                  f"succeeded, {len(failed)} failed, wall {wall:.1f} s, per-request latency median "
                  f"{statistics.median(ok) if ok else float('nan'):.2f} s (one model job at a time, others queue); "
                  f"peak RSS {peak:.0f} MB")
            for exc in failed[:3]:
                print(f"  failure: {exc!r}")
        print(f"memory (server process RSS): after the first request {rss_after_first:.0f} MB; 5 s after "
              f"round 1 {rss_rounds[0]:.0f} MB ({rss_rounds[0] - rss_after_first:+.0f} MB); 5 s after round 2 "
              f"{rss_rounds[1]:.0f} MB ({rss_rounds[1] - rss_after_first:+.0f} MB)")
        with urllib.request.urlopen(app.url, timeout=5) as response:
            print(f"server still answers: HTTP {response.status}")
    finally:
        app.stop()
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
