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
    from batdetect2.utils import detector_utils as du

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
        # process_file's "cnn_feats" keep only the first call of each chunk (features[0] of an (N, 32) array in
        # 1.3.1), so every call's feature vector is taken chunk by chunk from the same internal function
        audio = api.load_audio(file)
        feats = np.concatenate([
            du._process_audio_array(chunk, api.TARGET_SAMPLERATE_HZ, api.MODEL, config, api.DEVICE)[1]
            for _, chunk in du.iterate_over_chunks(audio, api.TARGET_SAMPLERATE_HZ, config["chunk_size"])
        ]).reshape(-1, 32)
        np.savez(
            out / f"{Path(file).name}.npz",
            start_s=raw["start_times"][keep], end_s=raw["end_times"][keep],
            low_freq_hz=raw["low_freqs"][keep], high_freq_hz=raw["high_freqs"][keep],
            detection_prob=raw["det_probs"][keep],
            class_probs=np.asarray(raw["class_probs"]).reshape(17, -1).T[keep],
            features=feats[keep],
            annotations=json.dumps(results["pred_dict"]["annotation"]),
            cnn_feats_rows=np.asarray(results.get("cnn_feats", [])).reshape(-1, 32).shape[0],
        )
    (out / "timings.json").write_text(json.dumps({"seconds": timings, "torch": torch.__version__,
                                                  "librosa": librosa.__version__}))


if __name__ == "__main__":
    main()
