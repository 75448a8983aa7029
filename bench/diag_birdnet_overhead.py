"""Where BirdNET's per-window time goes in rl_core: LiteRT alone vs ``embed_and_score`` vs the torch input path.

    cd <repo> && .venv/bin/python bench/diag_birdnet_overhead.py [--windows 48] [--rounds 2]

Per 3-s window at batch 1, wall and CPU milliseconds (CPU = user + system of the whole process) of:
* ``_run`` only: the LiteRT invoke loop (XNNPACK), no checks;
* ``embed_and_score``: what analyse_recording calls (BirdNET.prepare_input in numpy, then _run, numpy sigmoid);
* torch path: ``ModelBase.prepare_input`` (torch.isfinite, ...) + ``_run`` + ``torch.sigmoid``, as before the fix.
torch's OpenMP workers spin after each parallel op (libgomp's default wait policy), on the cores that the
XNNPACK threads need; run with OMP_WAIT_POLICY=PASSIVE to see the torch path recover.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch

    from rl_core import build_model
    from rl_core.models.base import ModelBase

    model = build_model("birdnet_v2_4")
    x = (np.random.default_rng(0).standard_normal((args.windows, 144000)) * 0.05).astype(np.float32)
    windows = [torch.from_numpy(x[i : i + 1]) for i in range(args.windows)]

    def run_only():
        for w in windows:
            model._run(w)

    def embed_and_score():
        for w in windows:
            model.embed_and_score(w)

    def torch_path():
        for w in windows:
            logits, _ = model._run(ModelBase.prepare_input(model, w))
            torch.sigmoid(torch.from_numpy(logits))

    print(f"torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    embed_and_score()  # warm up
    for r in range(args.rounds):
        for name, fn in [("_run only (LiteRT)", run_only), ("embed_and_score", embed_and_score),
                         ("torch path (before the fix)", torch_path)]:
            c, t = cpu_seconds(), time.perf_counter()
            fn()
            wall, cpu = time.perf_counter() - t, cpu_seconds() - c
            print(f"round {r + 1}: {name:<28} {wall / args.windows * 1000:6.1f} wall ms, "
                  f"{cpu / args.windows * 1000:6.1f} CPU ms per window", flush=True)


if __name__ == "__main__":
    main()
