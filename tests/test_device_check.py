"""bench/device_check.py (the GPU check a lent device runs) works end to end; here on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_device_check_script_passes_on_cpu():
    done = subprocess.run(
        [sys.executable, "-m", "bench.device_check", "--device", "cpu", "--families", "efficientnet",
         "--batches", "1", "--reps", "1"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| efficientnet |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:4] == ["`esp_aves2_effnetb0_all`", "cpu", "1"]
    assert float(cells[4]) > 0 and float(cells[5]) > 0  # fp32 and bf16 audio seconds per second
    assert "same object" in cells[6]
    assert "all checks passed" in done.stdout
