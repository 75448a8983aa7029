"""Parity and speed of rl_core's BatDetect2 against the official ``batdetect2`` 1.3.1 on the same recordings.

The official package runs in its own virtual environment (``/work/batdetect2-venv``: ``pip install
batdetect2==1.3.1``) through ``_official_batdetect2_runner.py``; rl_core runs here, through the standard recording
path (``rl_core.inference.analyse_recording``). Calls are matched by start time and low frequency (the same peak of the
detection map); for matched calls the script compares the species (argmax), the 17 species probabilities, the
detection probability, the box and the 32-d feature vector. Throughput: seconds of audio per second of wall time,
both with 2 torch threads, one timed pass per file after a warm-up, in one run.

    .venv/bin/python -m bench.peer.parity_batdetect2 [FILES...]

Without FILES it uses the bundled bat recordings (tests/data/batdetect2/, assets/examples/); more are in the
batdetect2 repository (example_data/audio/, tests/data/).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

import numpy as np  # noqa: E402
import torch  # noqa: E402

TOLERANCE = 1e-4  # probabilities
FEATURE_TOLERANCE = 1e-3  # 32-d call features: unbounded ReLU activations of order 1
TIME_MATCH_S = 1e-4  # same output column (one column is 1 ms)
FREQ_MATCH_HZ = 1.0  # same output row (one row is 859 Hz)
DEFAULT_FILES = sorted((REPO / "tests" / "data" / "batdetect2").glob("*.wav")) + sorted(
    (REPO / "assets" / "examples").glob("bat_*.wav"))


def compare(official: dict, ours, features: np.ndarray) -> dict:
    """Match calls and report differences."""
    names = [c for c in ours.columns[9:]]
    our_probs = ours[names].to_numpy()
    matched, species_same, worst_prob, worst_det, worst_feat, worst_box = 0, 0, 0.0, 0.0, 0.0, 0.0
    used = set()
    for i in range(len(official["start_s"])):
        close = np.flatnonzero((np.abs(ours["start_s"].to_numpy() - official["start_s"][i]) < TIME_MATCH_S)
                               & (np.abs(ours["low_freq_hz"].to_numpy() - official["low_freq_hz"][i]) < FREQ_MATCH_HZ))
        close = [j for j in close if j not in used]
        if not close:
            continue
        j = close[0]
        used.add(j)
        matched += 1
        species_same += int(np.argmax(official["class_probs"][i]) == np.argmax(our_probs[j]))
        worst_prob = max(worst_prob, float(np.abs(official["class_probs"][i] - our_probs[j]).max()))
        worst_det = max(worst_det, abs(float(official["detection_prob"][i]) - float(ours["detection_prob"][j])))
        worst_box = max(worst_box, abs(float(official["end_s"][i]) - float(ours["end_s"][j])) * 1000,
                        abs(float(official["high_freq_hz"][i]) - float(ours["high_freq_hz"][j])) / 1000)
        worst_feat = max(worst_feat, float(np.abs(official["features"][i] - features[j]).max()))
    return {"official_calls": len(official["start_s"]), "rl_core_calls": len(ours), "matched": matched,
            "species_same": species_same, "max_prob_diff": worst_prob, "max_det_diff": worst_det,
            "max_feature_diff": worst_feat, "max_box_diff_ms_or_khz": worst_box}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, default=DEFAULT_FILES)
    parser.add_argument("--official-python", default="/work/batdetect2-venv/bin/python")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    files = [str(f) for f in args.files]
    if not files:
        print("no recordings given and none bundled", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([args.official_python, str(Path(__file__).with_name("_official_batdetect2_runner.py")),
                        "--out", tmp, "--threads", str(args.threads), *files], check=True)
        official = {Path(f).name: dict(np.load(Path(tmp) / f"{Path(f).name}.npz")) for f in files}
        official_s = json.loads((Path(tmp) / "timings.json").read_text())

    import soundfile as sf

    from rl_core import load_model
    from rl_core.inference import analyse_recording

    torch.set_num_threads(args.threads)
    model = load_model("batdetect2_uk", device="cpu")
    def analyse(path: str):  # the one call site of the standard recording path
        start = time.perf_counter()
        result = analyse_recording(model, path)
        return result, time.perf_counter() - start

    analyse(files[0])  # warm-up, untimed
    ours_s, rows, audio_s = {}, [], 0.0
    for f in files:
        result, ours_s[Path(f).name] = analyse(f)
        audio_s += sf.info(f).duration
        row = {"file": Path(f).name, **compare(official[Path(f).name], result.calls, result.call_features)}
        rows.append(row)
        print(json.dumps(row))
    total_official, total_ours = sum(official_s["seconds"].values()), sum(ours_s.values())
    ok = all(r["matched"] == r["official_calls"] == r["rl_core_calls"] and r["species_same"] == r["matched"]
             and r["max_prob_diff"] <= TOLERANCE and r["max_det_diff"] <= TOLERANCE
             and r["max_feature_diff"] <= FEATURE_TOLERANCE for r in rows)
    print(f"audio {audio_s:.1f} s in {len(files)} files; official batdetect2 {total_official:.2f} s "
          f"({audio_s / total_official:.1f}x real time), rl_core {total_ours:.2f} s ({audio_s / total_ours:.1f}x); "
          f"throughput ratio rl_core / official = {total_official / total_ours:.2f} "
          f"(official torch {official_s['torch']}, librosa {official_s['librosa']})")
    print("PARITY OK" if ok else "PARITY DIFFERS")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
