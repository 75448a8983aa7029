"""Run the official ``batdetect2`` 1.3.1 (its API defaults, CNN features on) on recordings; save calls and timings.

Run by parity_batdetect2.py with the interpreter of a separate virtual environment (``/work/batdetect2-venv``);
it does not import rl_core. Per file it saves, unrounded: start/end times, low/high frequencies, detection
probabilities, the 17 species probabilities and the 32-d CNN feature of every call.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, help="folder for one .npz per recording and timings.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    import librosa
    import torch

    torch.set_num_threads(args.threads)
    from batdetect2 import api

    config = api.get_config(cnn_features=True)  # the API defaults: 3-s chunks, detection threshold 0.01
    raw_config = {**config, "return_raw_preds": True}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    api.process_file(args.files[0], config=config)  # warm-up, untimed
    for file in args.files:
        start = time.perf_counter()
        results = api.process_file(file, config=config)  # what a user runs: timed
        timings[Path(file).name] = time.perf_counter() - start
        raw = api.process_file(file, config=raw_config)  # the same calls, unrounded (untimed)
        nyquist = librosa.get_samplerate(file) / 2
        keep = raw["high_freqs"] <= nyquist  # as the official convert_results drops calls above Nyquist
        feats = np.asarray(results.get("cnn_feats", np.zeros((0, 32))), dtype=np.float32).reshape(-1, 32)
        np.savez(
            out / f"{Path(file).name}.npz",
            start_s=raw["start_times"][keep], end_s=raw["end_times"][keep],
            low_freq_hz=raw["low_freqs"][keep], high_freq_hz=raw["high_freqs"][keep],
            detection_prob=raw["det_probs"][keep],
            class_probs=np.asarray(raw["class_probs"]).reshape(17, -1).T[keep],
            features=feats[keep] if feats.shape[0] == keep.shape[0] else feats,
            annotations=json.dumps(results["pred_dict"]["annotation"]),
        )
    (out / "timings.json").write_text(json.dumps({"seconds": timings, "torch": torch.__version__,
                                                  "librosa": librosa.__version__}))


if __name__ == "__main__":
    main()
