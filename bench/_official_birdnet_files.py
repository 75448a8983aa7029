"""Run the official ``birdnet`` package (1.3.1, LiteRT) over a list of files with its own defaults; print JSON.

Run by bench_archive.py with the interpreter of a separate venv (/work/birdnet-venv); it does not import rl_core.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import metadata


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--list", required=True, help="text file with one recording path per line")
    args = parser.parse_args()

    import birdnet

    files = [line for line in open(args.list, encoding="utf-8").read().splitlines() if line]
    start = time.perf_counter()
    model = birdnet.load_custom("acoustic", "2.4", "tf", args.model, args.labels, library="litert")
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    result = model.predict(files, top_k=1, default_confidence_threshold=None)
    predict_s = time.perf_counter() - start
    print(json.dumps({"version": metadata.version("birdnet"), "load_s": load_s, "predict_s": predict_s,
                      "files": len(files), "segments": int(result.species_ids.shape[0] * result.species_ids.shape[1])}))


if __name__ == "__main__":
    main()
