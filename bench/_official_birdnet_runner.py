"""Run the official ``birdnet`` package (1.3.1, LiteRT backend) on one file and print timings as JSON.

Run by bench_birdnet.py with the interpreter of a separate virtual environment (``/work/birdnet-venv``); it
does not import rl_core. ``birdnet`` starts worker processes, hence the ``__main__`` guard.
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
    parser.add_argument("--file", required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--n-workers", type=int, default=None, help="None: birdnet's default (physical cores)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    import birdnet

    start = time.perf_counter()
    model = birdnet.load_custom("acoustic", "2.4", "tf", args.model, args.labels, library="litert")
    load_s = time.perf_counter() - start
    times, cpu = [], []
    result = None
    for _ in range(args.repeats):
        cpu0 = _cpu_seconds()
        start = time.perf_counter()
        result = model.predict(args.file, top_k=1, batch_size=args.batch_size, n_workers=args.n_workers,
                               default_confidence_threshold=None)
        times.append(time.perf_counter() - start)
        cpu.append(_cpu_seconds() - cpu0)  # this process + its (joined) worker processes
    # top-1 species per 3 s segment, to check that both implementations agree
    ids = result.species_ids[0, :, 0]
    names = [str(result.species_list[i]).split("_")[0] for i in ids]
    probs = result.species_probs[0, :, 0].astype(float).tolist()
    print(json.dumps({
        "version": metadata.version("birdnet"),
        "load_s": load_s,
        "predict_s": times,
        "predict_cpu_s": cpu,
        "segments": len(names),
        "top1": names,
        "top1_score": probs,
    }))


if __name__ == "__main__":
    main()
