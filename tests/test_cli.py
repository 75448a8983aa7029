"""`python -m rl_core ...` as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(("error:", "python -m rl_core"))]
    assert lines, result.stderr
    return lines[-1]


def test_bad_config_files_are_one_line_errors(tmp_path):
    """Issue 16 #6: a non-UTF-8 config and a directory as --config printed tracebacks."""
    latin1 = tmp_path / "exp.yml"
    latin1.write_bytes("model: birdnet_v2_4\ndataset: caf\xe9\n".encode("latin-1"))
    line = _one_line_error(run_cli("train", "--config", str(latin1)))
    assert line == f"error: config file {latin1} is not UTF-8 text (byte 32); save it as UTF-8 YAML"
    line = _one_line_error(run_cli("evaluate", "--config", str(tmp_path)))
    assert line == f"error: config file {tmp_path} is a directory; give the path of a YAML file"


def test_bad_numbers_are_refused_by_the_parser(tone_wav, capsys):
    """Issue 16 #6: `--top-k 0` was accepted silently (an empty CSV), `--hop 0` raised a ValueError.
    (rl_core.cli.main in-process: the parser refuses before anything is loaded.)"""
    from rl_core.cli import main

    for flag, value, expected in [("--top-k", "0", "argument --top-k: must be at least 1, got 0"),
                                  ("--hop", "0", "argument --hop: must be above 0, got 0"),
                                  ("--hop", "nan", "argument --hop: must be above 0, got nan"),
                                  ("--min-score", "1.5", "argument --min-score: must be between 0 and 1, got 1.5"),
                                  ("--week", "49", "argument --week: must be between 1 and 48, got 49")]:
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", "birdnet_v2_4", str(tone_wav), flag, value])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"python -m rl_core predict: error: {expected}"


def test_a_device_or_folder_is_not_reported_as_missing(tmp_path):
    """Issue 16 #6: /dev/zero was reported as 'file not found'."""
    result = run_cli("predict", "birdnet_v2_4", "/dev/zero", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: /dev/zero: not a regular file (a folder or a device); give an audio file",
                      f"error: {tmp_path}: not a regular file (a folder or a device); give an audio file"]


def test_predictions_csv_escapes_formulas(tmp_path, tone_wav):
    """Issue 16 #8: a recording named like a formula reached predictions.csv as a live spreadsheet formula."""
    import csv

    from rl_core.csv_safety import escape_cell

    assert [escape_cell(v) for v in ["=1+1", "+1", "-1", "@A1", "\tx", "\rx", "a=b", -1.5, ""]] == [
        "'=1+1", "'+1", "'-1", "'@A1", "'\tx", "'\rx", "a=b", -1.5, ""]
    risky = tmp_path / "=HYPERLINK(evil).wav"
    risky.write_bytes(tone_wav.read_bytes())
    out = tmp_path / "pred.csv"
    result = run_cli("predict", "birdnet_v2_4", str(risky), str(tone_wav), "--top-k", "1", "--csv", str(out))
    assert result.returncode == 0, result.stderr
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == ["'=HYPERLINK(evil).wav", "tone.wav"]
    assert float(rows[0]["score"]) == float(rows[0]["score"])  # numbers stay numbers
