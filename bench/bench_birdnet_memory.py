"""Peak memory of BirdNET on a one-hour 48 kHz recording: ``analyse_recording`` and ``python -m rl_core predict``.

    cd <repo> && .venv/bin/python -m bench.bench_birdnet_memory [--seconds 3600] [--skip-cli]

A one-hour 48 kHz 16-bit WAV is generated block by block in a temp dir (real pykanto songs tiled, see
_recordings.py). Target: the process grows by <= 500 MB above its idle state with the model loaded.

* analyse_recording: a fresh process loads the model (``rl_core.cache.get_model``), runs one warm-up window, records
  its idle RSS, resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` = 5), runs ``analyse_recording`` on the
  hour and reads the peak (VmHWM). Growth = peak - idle.
* CLI: ``python -m rl_core predict birdnet_v2_4 <file> --csv out.csv`` as its own process; its lifetime peak RSS
  comes from ``os.wait4``. Its idle state is measured by a second process that imports the CLI, loads the model
  the same way and runs one warm-up window. Growth = CLI peak - that idle RSS (this includes the transient of
  loading the model, reported separately as the idle process's own peak).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MB = 2**20

_STATUS = textwrap.dedent(
    """
    import re
    def _kb(field):
        return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
    """
)

RUN_FILE_CHILD = _STATUS + textwrap.dedent(
    """
    import gc, json, sys, time, torch
    from rl_core.cache import get_model
    from rl_core.inference import analyse_recording
    model = get_model("birdnet_v2_4")
    model.embed_and_score(torch.zeros(1, 144000))  # warm up the interpreter
    gc.collect()
    load_peak = _kb("VmHWM")
    idle = _kb("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    result = analyse_recording(model, sys.argv[1])
    elapsed = time.perf_counter() - start
    peak = _kb("VmHWM")
    print(json.dumps({"idle": idle, "peak": peak, "load_peak": load_peak, "seconds": elapsed,
                      "windows": result.num_windows, "duration": result.duration_s}))
    """
)

CLI_IDLE_CHILD = _STATUS + textwrap.dedent(
    """
    import gc, json, torch
    import rl_core.cli, rl_core.inference
    from rl_core.cache import get_model
    model = get_model("birdnet_v2_4")
    model.embed_and_score(torch.zeros(1, 144000))
    gc.collect()
    print(json.dumps({"idle": _kb("VmRSS"), "load_peak": _kb("VmHWM")}))
    """
)


def child_json(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()

    from bench._recordings import write_tiled_recording

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_birdnet_mem_") as tmp:
        path = Path(tmp) / "one_hour_48k.wav"
        start = time.perf_counter()
        write_tiled_recording(path, args.seconds)
        print(f"generated {args.seconds:.0f} s at 48 kHz (16-bit, {path.stat().st_size / MB:.0f} MB) "
              f"in {time.perf_counter() - start:.1f} s", flush=True)

        stats = child_json(RUN_FILE_CHILD, str(path))
        assert stats["windows"] == int(round(args.seconds / 3)), stats["windows"]
        growth = (stats["peak"] - stats["idle"]) / MB
        print(f"analyse_recording: idle {stats['idle'] / MB:.0f} MB "
              f"(peak while loading {stats['load_peak'] / MB:.0f} MB), "
              f"peak during analyse_recording {stats['peak'] / MB:.0f} MB, growth {growth:.0f} MB, "
              f"{stats['windows']} windows in {stats['seconds']:.0f} s", flush=True)
        rows.append(("analyse_recording (in-process)", stats["idle"], stats["peak"], growth, stats["seconds"]))

        if not args.skip_cli:
            idle = child_json(CLI_IDLE_CHILD)
            csv = Path(tmp) / "predictions.csv"
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            start = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "rl_core", "predict", "birdnet_v2_4", str(path),
                                     "--csv", str(csv)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            err = proc.stderr.read().decode(errors="replace")
            if proc.returncode != 0:
                raise RuntimeError(f"predict failed ({proc.returncode}): {err[-2000:]}")
            lines = sum(1 for _ in open(csv)) - 1
            peak = usage.ru_maxrss * 1024
            growth = (peak - idle["idle"]) / MB
            print(f"python -m rl_core predict: peak {peak / MB:.0f} MB over the whole process, idle with model "
                  f"{idle['idle'] / MB:.0f} MB (its load peak {idle['load_peak'] / MB:.0f} MB), growth "
                  f"{growth:.0f} MB, {lines} CSV rows, {elapsed:.0f} s wall (incl. start-up)", flush=True)
            rows.append(("python -m rl_core predict (subprocess)", idle["idle"], peak, growth, elapsed))

    print()
    print(f"BirdNET V2.4 peak memory on {args.seconds:.0f} s of 48 kHz 16-bit audio (target: growth <= 500 MB)")
    print(f"| {'path':<40} | idle RSS (MB) | peak RSS (MB) | growth (MB) | seconds | <= 500 MB |")
    print(f"|{'-' * 42}|---------------|---------------|-------------|---------|-----------|")
    for name, idle_b, peak_b, growth, secs in rows:
        print(f"| {name:<40} | {idle_b / MB:13.0f} | {peak_b / MB:13.0f} | {growth:11.0f} | {secs:7.0f} | "
              f"{'yes' if growth <= 500 else 'NO':>9} |")


if __name__ == "__main__":
    main()
