"""Run the official ``birdnet`` package (1.3.1, LiteRT backend) on recordings and print timings and scores as JSON.

Runs with the interpreter of a separate virtual environment and does not import rl_core:

    python3 -m venv /work/birdnet-venv && /work/birdnet-venv/bin/pip install birdnet==1.3.1
    /work/birdnet-venv/bin/python bench/peer/official_birdnet_runner.py --model M.tflite --labels L.txt --file a.wav

``bench/bench_birdnet.py`` drives it (timings, and the scores it compares with rl_core's). ``birdnet`` starts
worker processes, hence the ``__main__`` guard.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from importlib import metadata


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite")
    parser.add_argument("--labels", required=True, help="BirdNET_GLOBAL_6K_V2.4_Labels.txt")
    parser.add_argument("--file", required=True, action="append", help="a recording (repeat for several)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--n-workers", type=int, default=None, help="None: birdnet's default (physical cores)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--top-k", type=int, default=1, help="species reported per 3-s segment")
    args = parser.parse_args()

    import birdnet

    start = time.perf_counter()
    model = birdnet.load_custom("acoustic", "2.4", "tf", args.model, args.labels, library="litert")
    load_s = time.perf_counter() - start
    files = []
    for path in args.file:
        times, cpu = [], []
        result = None
        for _ in range(args.repeats):
            cpu0 = _cpu_seconds()
            start = time.perf_counter()
            result = model.predict(path, top_k=args.top_k, batch_size=args.batch_size, n_workers=args.n_workers,
                                   default_confidence_threshold=None)
            times.append(time.perf_counter() - start)
            cpu.append(_cpu_seconds() - cpu0)  # this process + its (joined) worker processes
        ids = result.species_ids[0]  # (segments, top_k)
        files.append({
            "file": path,
            "predict_s": times,
            "predict_cpu_s": cpu,
            "segments": int(ids.shape[0]),
            # scientific names of the top-k species per segment (labels are "Scientific_Common") and their scores
            "species": [[str(result.species_list[i]).split("_")[0] for i in row] for row in ids],
            "scores": result.species_probs[0].astype(float).tolist(),
        })
    print(json.dumps({"version": metadata.version("birdnet"), "load_s": load_s, "files": files}))


if __name__ == "__main__":
    main()
