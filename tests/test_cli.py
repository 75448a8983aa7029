"""`python -m rl_core ...` as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rl_core", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_list_models_and_describe():
    result = run_cli("list-models")
    assert result.returncode == 0 and "birdnet_v2_4" in result.stdout
    result = run_cli("describe", "birdnet_v2_4")
    assert result.returncode == 0 and "48000 Hz" in result.stdout and "CC BY-NC-SA 4.0" in result.stdout


def test_predict_csv_with_one_bad_file(tmp_path, great_tits):
    bad = tmp_path / "broken.wav"
    bad.write_text("not audio")
    out = tmp_path / "pred.csv"
    result = run_cli("predict", "birdnet_v2_4", str(great_tits[0].path), str(bad), str(great_tits[1].path),
                     "--top-k", "3", "--csv", str(out))
    assert result.returncode == 1  # one file failed ...
    assert "broken.wav: cannot decode audio" in result.stderr and "Traceback" not in result.stderr
    table = pd.read_csv(out)  # ... and the two good files are still written
    assert list(table.columns) == ["file", "start_s", "end_s", "rank", "scientific_name", "common_name", "score"]
    assert set(table.file) == {great_tits[0].path.name, great_tits[1].path.name}
    assert (table[table["rank"] == 1].scientific_name == "Parus major").all()
    assert len(table) == 6


def test_embed_npz(tmp_path, storm_petrels):
    out = tmp_path / "emb.npz"
    result = run_cli("embed", "birdnet_v2_4", *map(str, storm_petrels), "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = np.load(out)  # window embeddings (layout: README; tests/test_one_path.py checks it in full)
    assert data["embeddings"].shape == (10, 1024) and np.bincount(data["file_index"]).tolist() == [5, 5]
    assert list(data["files"]) == [p.name for p in storm_petrels]


def test_unknown_model_one_line_error_and_debug():
    result = run_cli("describe", "birdnet_v3")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown model 'birdnet_v3'") and "Traceback" not in result.stderr
    assert "Did you mean: birdnet_v2_4" in result.stderr
    result = run_cli("--debug", "describe", "birdnet_v3")
    assert "Traceback" in result.stderr
