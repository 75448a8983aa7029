"""Hostile and broken inputs through the running app (gradio_client) and the CLI: named errors, no server paths,
no work left running for a client that has gone (issue 16)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from app_runner import RunningApp
from gradio_client import Client, handle_file

MODEL = "birdnet_v2_4"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # one worker: a job left running for a gone client would hold up the next request (issue 16 #12)
    with RunningApp("--preload", MODEL, "--no-warmup", "--workers", "1", "--max-file-size", "20MB",
                    log_path=tmp_path_factory.mktemp("app") / "app.log") as running:
        yield running


@pytest.fixture(scope="module")
def client(app) -> Client:
    return Client(app.url, verbose=False)


def _tone(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32)


def _bad_audio(kind: str, folder: Path) -> tuple[Path, str]:
    """One broken recording of ``kind`` and the words its error must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "text_named_wav":
        path = folder / "notes.wav"
        path.write_text("these are my field notes, not audio\n" * 20)
        return path, "notes.wav: cannot decode audio (Error opening 'notes.wav'"
    if kind == "riff_garbage":
        path = folder / "broken.wav"
        path.write_bytes(b"RIFF\x00\x01\x00\x00WAVEfmt garbage that is not audio" * 3)
        return path, "broken.wav: cannot decode audio"
    if kind == "empty":
        path = folder / "empty.wav"
        path.write_bytes(b"")
        return path, "empty.wav: the file is empty (0 bytes)"
    if kind == "zero_samples":
        path = folder / "zero.wav"
        sf.write(path, np.zeros(0, np.float32), 16000)
        return path, "zero.wav: the file holds no audio samples"
    if kind == "truncated_wav":
        full = folder / "full.wav"
        sf.write(full, _tone(2.0), 16000, subtype="PCM_16")
        path = folder / "cut.wav"
        path.write_bytes(full.read_bytes()[: 44 + 16000])
        full.unlink()
        return path, "cut.wav: the file is truncated"
    if kind in ("nan", "inf"):
        x = _tone(1.0)
        x[100] = np.nan if kind == "nan" else np.inf
        path = folder / f"{kind}.wav"
        sf.write(path, x, 16000, subtype="FLOAT")
        return path, f"{kind}.wav: the recording contains NaN or infinite sample values"
    if kind == "random_mp3":
        path = folder / "noise.mp3"
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
        return path, "noise.mp3: cannot decode audio"
    if kind == "one_hz":  # 7 KB whose header says 1 Hz: an hour of "audio" (issue 16 #1)
        path = folder / "one_hz.wav"
        sf.write(path, np.zeros(3600, np.int16), 1, subtype="PCM_16")
        return path, "one_hz.wav: its header says 1 Hz, outside the 1,000-1,000,000 Hz"
    if kind == "truncated_ogg":  # analysed silently as a shorter file before (issue 16 #11)
        full = folder / "full.ogg"
        sf.write(full, (np.random.default_rng(1).standard_normal(48000 * 6) * 0.1).astype(np.float32), 48000,
                 format="OGG", subtype="VORBIS")
        path = folder / "cut.ogg"
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        full.unlink()
        return path, "cut.ogg: the file is truncated"
    if kind == "unknown_extension":
        path = folder / "data.xyz"
        path.write_bytes(b"\0" * 100)
        return path, "data.xyz: '.xyz' is not a supported audio format"
    raise ValueError(kind)


BAD_AUDIO = ["text_named_wav", "riff_garbage", "empty", "zero_samples", "truncated_wav", "truncated_ogg", "one_hz",
             "nan", "inf", "random_mp3", "unknown_extension"]


@pytest.mark.parametrize("interface", ["cli", "app"])
@pytest.mark.parametrize("kind", BAD_AUDIO)
def test_bad_audio_corpus(kind, interface, tmp_path, capsys, request):
    """Every kind of broken recording gets one line naming the file and the fault, through the CLI and the app,
    next to a good recording that is still analysed; no traceback, no server path."""
    from rl_core.datasets_bundled import storm_petrel_recordings

    bad, expected = _bad_audio(kind, tmp_path / "upload")
    good = storm_petrel_recordings()[0]
    if interface == "cli":
        from rl_core.cli import main

        out = tmp_path / "pred.csv"
        code = main(["predict", MODEL, str(bad), str(good), "--top-k", "1", "--csv", str(out)])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {expected}"), err
        import pandas as pd

        assert set(pd.read_csv(out)["file"]) == {good.name}  # the good file is still written
        return
    client = request.getfixturevalue("client")
    status, summary, *_ = client.predict([handle_file(str(bad)), handle_file(str(good))], "", MODEL, 1,
                                         api_name="/predict")
    assert "Analysed 1 file(s)" in status and f"- ⚠️ {expected}" in status, status
    assert summary["data"][0][0] == good.name and "Hydrobates pelagicus" in summary["data"][0][3]
    assert "Traceback" not in status and "/tmp" not in status and "gradio" not in status


def test_messages_name_uploads_not_server_paths(client, tmp_path):
    """Issue 16 #9: decoder errors quoted /tmp/gradio/<hash>/... ."""
    bad, expected = _bad_audio("text_named_wav", tmp_path)
    status, *_ = client.predict([handle_file(str(bad))], "storm_petrel_XC46092.wav", MODEL, 3, api_name="/predict")
    assert f"- ⚠️ {expected}: Format not recognised.)" in status, status
    assert "/tmp" not in status and "gradio/" not in status and str(REPO) not in status


def test_a_dropped_client_frees_the_model_slot(app, client, tmp_path):
    """Issue 16 #12: a client that dropped a long job after 3 s made the next small request wait 42 s."""
    long_file = tmp_path / "night.flac"
    sf.write(long_file, np.zeros(48000 * 60 * 30, np.int16), 48000, subtype="PCM_16")  # 30 min: ~600 windows
    script = textwrap.dedent(f"""
        import sys, time
        from gradio_client import Client, handle_file
        job = Client({app.url!r}, verbose=False).submit([handle_file({str(long_file)!r})], "", {MODEL!r}, 3,
                                                          api_name="/predict")
        deadline = time.time() + 120
        while job.status().code.name not in ("PROCESSING", "PROGRESS") and time.time() < deadline:
            time.sleep(0.1)
        print("running" if time.time() < deadline else "never started", flush=True)
        time.sleep(600)
    """)
    dropped = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert dropped.stdout.readline().strip() == "running"
        time.sleep(3)
    finally:
        dropped.kill()  # the connection goes with the process, as when a laptop lid closes
        dropped.wait()
    start = time.perf_counter()
    _, summary, *_ = client.predict([], "storm_petrel_XC46092.wav", MODEL, 2, api_name="/predict")
    waited = time.perf_counter() - start
    assert "Hydrobates pelagicus" in summary["data"][0][3]
    # the 30-min job alone takes well over a minute here; Gradio notices a closed stream within ~10 s
    assert waited < 30, f"the next request waited {waited:.0f} s"
    log = app.output()
    assert "the client of this request disconnected: its work stops here" in log and "Traceback" not in log
