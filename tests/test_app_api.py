"""`python app.py` launched on a free local port; every API endpoint called through gradio_client."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from app_runner import RunningApp, free_port
from gradio_client import Client, handle_file

REPO = Path(__file__).resolve().parent.parent
MODEL = "birdnet_v2_4"
ENDPOINTS = {"/predict", "/embedding_map", "/leaderboard", "/zoo_table", "/model_card", "/project_start",
             "/project_stop", "/project_status", "/project_info", "/project_browse", "/project_export"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    running = RunningApp("--preload", MODEL, "--max-file-size", "3MB", "--no-warmup",
                         log_path=tmp_path_factory.mktemp("app") / "app.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def client(app) -> Client:
    return Client(app.url, verbose=False)


def test_every_endpoint_is_listed(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == ENDPOINTS
    params = [p["parameter_name"] for p in api["named_endpoints"]["/predict"]["parameters"]]
    assert params == ["files", "example", "model_name", "top_k"]


def test_predict(client, great_tits, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEnot really audio")
    status, summary, pick, species, timeline, spectrogram, audio, downloads = client.predict(
        [handle_file(str(great_tits[3].path)), handle_file(str(broken))], "", MODEL, 4,
        api_name="/predict")
    assert "Analysed 1 file(s)" in status and "broken.wav" in status
    assert summary["data"][0][0] == great_tits[3].path.name and summary["data"][0][3] == "Parus major"
    assert pick["value"] == great_tits[3].path.name
    assert [row[1] for row in species["data"]][0] == "Parus major" and len(species["data"]) == 4
    assert timeline["type"] == "plotly" and "Parus major" in timeline["plot"]
    assert Path(spectrogram).suffix == ".png" and Path(spectrogram).stat().st_size > 1000
    assert Path(audio["value"]).name == great_tits[3].path.name
    names = sorted(Path(d).name for d in downloads)
    assert names == sorted(["predictions.csv", f"{great_tits[3].path.stem}.selections.txt", "embeddings.npz"])
    csv_path = next(d for d in downloads if d.endswith(".csv"))
    assert pd.read_csv(csv_path)["scientific_name"].iloc[0] == "Parus major"
    assert np.load(next(d for d in downloads if d.endswith(".npz")))["embeddings"].shape == (1, 1024)


def test_predict_bundled_example(client):
    status, summary, *_ = client.predict([], "storm_petrel_XC46092.wav", MODEL, 2, api_name="/predict")
    assert summary["data"][0][3] == "Hydrobates pelagicus"


def test_predict_without_input_is_a_readable_error(client):
    with pytest.raises(Exception, match="add one or more recordings"):
        client.predict([], "", MODEL, 3, api_name="/predict")


def test_upload_above_max_file_size_is_refused(app, client, tmp_path):
    big = tmp_path / "big.wav"
    sf.write(big, np.zeros(48000 * 40, dtype=np.float32), 48000, subtype="PCM_16")  # 3.8 MB > 3 MB limit
    with pytest.raises(ValueError, match="exceeds the maximum file size of 3000000 bytes"):
        client.predict([handle_file(str(big))], "", MODEL, 3, api_name="/predict")
    # the server refuses it too, whatever the client does
    import httpx

    with open(big, "rb") as fh:
        response = httpx.post(app.url + "gradio_api/upload", files={"files": ("big.wav", fh, "audio/wav")}, timeout=60)
    assert response.status_code == 413


def test_embedding_map(client, great_tits):
    files = [handle_file(str(r.path)) for r in great_tits[:2] + great_tits[-2:]]
    status, plot, points, downloads = client.predict(
        files, None, None, False, MODEL, "last_layer", "mean", "PCA", 15, 0.1, "euclidean", 30,
        api_name="/embedding_map")
    assert "Mapped **4** recordings" in status
    assert plot["type"] == "plotly"
    assert len(points["data"]) == 4 and points["headers"] == ["file", "label", "x", "y"]
    assert sorted(Path(d).name for d in downloads) == ["map_coordinates.csv", "map_embeddings.npz"]


def test_embedding_map_example_set(client):
    status, plot, points, downloads = client.predict(
        [], None, None, True, MODEL, "last_layer", "max", "t-SNE", 15, 0.1, "cosine", 5, api_name="/embedding_map")
    labels = {row[1] for row in points["data"]}
    assert len(points["data"]) == 26 and {"Great Tit B32", "Storm-Petrel"} <= labels


def test_leaderboard_endpoint(client):
    table, count, bar, scatter, sources, csv_path = client.predict(
        [], [], [], [], [], [], [], "", ["model", "value", "source"], "accuracy", api_name="/leaderboard")
    assert table["datatype"] == ["str", "number", "str"]  # numbers go out as numbers: numeric sorting
    table = table["value"]
    assert table["headers"] == ["model", "value", "source"]
    values = [row[1] for row in table["data"]]
    assert values == sorted(values, reverse=True)
    total = len(pd.read_csv(csv_path))
    assert count.startswith(f"**{total}** of")
    if total:  # with the eval branch's data merged, a filter must shrink the table
        first_benchmark = pd.read_csv(csv_path)["benchmark"].iloc[0]
        table2, count2, *_ = client.predict([first_benchmark], [], [], [], [], [], [], "", ["model", "value"],
                                            "accuracy", api_name="/leaderboard")
        assert 0 < len(table2["value"]["data"]) < total


def test_zoo_endpoints(client):
    table = client.predict("birdnet", "All", api_name="/zoo_table")
    assert [row[0] for row in table["data"]] == [MODEL]
    empty = client.predict("zzz-no-model", "All", api_name="/zoo_table")["data"]
    assert all(not any(cell not in ("", None) for cell in row) for row in empty)  # no model row
    card, snippet = client.predict(MODEL, api_name="/model_card")
    assert "6522 classes" in card and 'load_model("birdnet_v2_4"' in snippet


def test_preload_logged(app):
    assert f"preloading {MODEL}" in app.output()


def test_share_offline_keeps_serving_locally(tmp_path):
    running = RunningApp("--share", "--no-warmup", log_path=tmp_path / "share.log")
    try:
        running.wait_ready()
        deadline = time.time() + 90
        while "No public link could be made" not in running.output() and time.time() < deadline:
            time.sleep(0.5)
        if "Running on public URL" in running.output():
            pytest.skip("this machine has internet access: a share link was made")
        assert "No public link could be made" in running.output()
        assert "keeps serving locally" in running.output()
        with urllib.request.urlopen(running.url, timeout=5) as response:
            assert response.status == 200
    finally:
        running.stop()


def test_bad_flags_are_errors():
    out = subprocess.run([sys.executable, "app.py", "--max-file-size", "lots"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "not a size" in out.stderr
    out = subprocess.run([sys.executable, "app.py", "--porrt", "1"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "unrecognized arguments" in out.stderr
    out = subprocess.run([sys.executable, "app.py", "--device", "cuda:99"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "--device cuda:99" in out.stderr
    out = subprocess.run([sys.executable, "app.py", "--preload", "no_such_model", "--port", str(free_port())],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "--preload no_such_model" in out.stderr


def test_device_auto_resolves_to_best_available():
    import app
    from rl_core.loading import resolve_device

    assert app.parse_args([]).device == "auto"
    assert app.check_device("auto") == str(resolve_device("auto"))  # cuda, else mps, else cpu
    assert app.check_device("cpu") == "cpu"
