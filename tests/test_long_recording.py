"""A one-hour 48 kHz recording is predicted in bounded memory (streamed, never held as float64)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_hour_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "one_hour.wav"
    rng = np.random.default_rng(0)
    block = (rng.standard_normal(48000 * 60) * 0.05).astype(np.float32)
    with sf.SoundFile(path, "w", samplerate=48000, channels=1, subtype="PCM_16") as fh:
        for _ in range(60):
            fh.write(block)
    return path


@pytest.mark.slow
def test_one_hour_predict_peak_memory(one_hour_wav):
    code = textwrap.dedent(
        f"""
        import json, psutil, torch
        from rl_core.cache import get_model
        from rl_core.inference import analyse_recording
        model = get_model("birdnet_v2_4")
        model.embed_and_score(torch.zeros(1, 144000))  # warm up the interpreter
        idle = psutil.Process().memory_info().rss
        result = analyse_recording(model, {str(one_hour_wav)!r})
        # VmHWM, not getrusage's ru_maxrss: on Linux a child's ru_maxrss starts at the parent's RSS at
        # fork (the pytest process, large after other model tests), VmHWM starts fresh at exec.
        peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        print(json.dumps({{"idle": idle, "peak": peak, "windows": result.num_windows,
                           "duration": result.duration_s, "top": result.top_k_table(1).shape[0]}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["windows"] == 1200 and abs(stats["duration"] - 3600) < 1e-6 and stats["top"] == 1200
    growth_mb = (stats["peak"] - stats["idle"]) / 2**20
    assert growth_mb <= 500, f"predict grew the process by {growth_mb:.0f} MB"
