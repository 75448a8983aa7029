"""Model cache: ``rl_core.cache.get_model`` hit time vs the cold load time (BirdNET V2.4).

    cd <repo> && .venv/bin/python -m bench.bench_model_cache [--processes 3] [--hits 10000] [--model birdnet_v2_4]

Each of ``--processes`` fresh Python processes (rl_core imported, nothing loaded) times:
* cold: the first ``get_model(name)`` call (a miss: builds the model, imports its runtime, reads the weights);
* reload: ``model_cache.clear()`` then ``get_model`` again (a miss with runtime imported, files in page cache);
* hit: ``get_model(name)`` again, ``--hits`` times (returns the cached object; asserted to be the same object).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import rl_core
    from rl_core.cache import get_model, model_cache
    name, hits = sys.argv[1], int(sys.argv[2])
    t = time.perf_counter(); first = get_model(name); cold = time.perf_counter() - t
    model_cache.clear()
    t = time.perf_counter(); model = get_model(name); reload = time.perf_counter() - t
    times = []
    for _ in range(hits):
        t = time.perf_counter_ns(); again = get_model(name); times.append(time.perf_counter_ns() - t)
        assert again is model
    times.sort()
    print(json.dumps({"cold": cold, "reload": reload, "hit_median_ns": times[len(times) // 2],
                      "hit_mean_ns": sum(times) / len(times), "hit_p99_ns": times[int(len(times) * 0.99)],
                      "hits": model_cache.stats.hits, "misses": model_cache.stats.misses}))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="birdnet_v2_4")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--hits", type=int, default=10000)
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = []
    for i in range(args.processes):
        out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.hits)], capture_output=True,
                             text=True, env=env, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        run = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append(run)
        print(f"process {i + 1}: cold {run['cold']:.3f} s, reload {run['reload']:.3f} s, hit median "
              f"{run['hit_median_ns'] / 1000:.1f} us (mean {run['hit_mean_ns'] / 1000:.1f} us, p99 "
              f"{run['hit_p99_ns'] / 1000:.1f} us), cache stats hits={run['hits']} misses={run['misses']}", flush=True)

    cold = statistics.median(r["cold"] for r in runs)
    reload = statistics.median(r["reload"] for r in runs)
    hit = statistics.median(r["hit_median_ns"] for r in runs) / 1e9
    print()
    print(f"get_model({args.model!r}), median over {args.processes} fresh processes ({args.hits} hits each)")
    print("| call                                   | time        | vs hit       |")
    print("|----------------------------------------|-------------|--------------|")
    print(f"| cold load (first call in a process)    | {cold * 1000:8.0f} ms | {cold / hit:10.0f}x |")
    print(f"| reload after model_cache.clear()       | {reload * 1000:8.0f} ms | {reload / hit:10.0f}x |")
    print(f"| cache hit (median call)                | {hit * 1e6:8.1f} us | {1:10.0f}x |")


if __name__ == "__main__":
    main()
