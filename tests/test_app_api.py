"""`python app.py` launched on a free local port; every API endpoint called through gradio_client."""

from __future__ import annotations

import json
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
ENDPOINTS = {"/predict", "/downloads", "/embedding_map", "/leaderboard", "/leaderboard_submit", "/zoo_table", "/model_card",
             "/project_start", "/project_stop", "/project_status", "/project_info", "/project_browse", "/project_export",
             "/similar_project", "/similar_search", "/similar_show", "/similar_mark_positive", "/similar_mark_negative",
             "/similar_mark_unsure", "/similar_train", "/similar_rank", "/similar_review", "/similar_calibrate",
             "/similar_map", "/similar_map_colour", "/similar_map_select", "/similar_map_click", "/similar_map_search",
             "/similar_map_label"}


@pytest.fixture(scope="module")
def leaderboard_dir(tmp_path_factory) -> Path:
    """A copy of leaderboard_data/, so that uploads never touch the repository's files."""
    folder = tmp_path_factory.mktemp("leaderboard")
    for name in ("published_results.csv", "local_results.csv", "model_aliases.csv", "schema.json"):
        (folder / name).write_bytes((REPO / "leaderboard_data" / name).read_bytes())
    return folder


@pytest.fixture(scope="module")
def app_tmp(tmp_path_factory) -> Path:
    """The app's own temporary folder (Gradio's cache and the app's outputs), so its disk use can be measured."""
    return tmp_path_factory.mktemp("app_tmp")


@pytest.fixture(scope="module")
def app(tmp_path_factory, leaderboard_dir, app_tmp):
    with RunningApp("--preload", MODEL, "--max-file-size", "3MB", "--no-warmup",
                    "--leaderboard-dir", str(leaderboard_dir),
                    log_path=tmp_path_factory.mktemp("app") / "app.log",
                    # offline, as on a field laptop: models without local weights must be refused at once
                    env={"TMPDIR": str(app_tmp), "GRADIO_TEMP_DIR": str(app_tmp / "gradio"), "HF_HUB_OFFLINE": "1",
                         "HF_HUB_CACHE": str(tmp_path_factory.mktemp("hf_cache"))}) as running:
        yield running


@pytest.fixture(scope="module")
def client(app) -> Client:
    return Client(app.url, verbose=False)


def test_every_endpoint_is_listed(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == ENDPOINTS
    params = [p["parameter_name"] for p in api["named_endpoints"]["/predict"]["parameters"]]
    assert params == ["files", "example", "model_name", "top_k", "min_conf", "sensitivity", "overlap_s", "lat", "lon",
                      "date", "location_threshold", "species_list", "language", "below", "classifier_files"]


def _predict(client, files, example="", top_k=4, model=MODEL, **options):
    """/predict with the tab's defaults for every option not given."""
    values = dict(min_conf=0.25, sensitivity=1.0, overlap_s=0.0, lat="", lon="", date="", location_threshold=0.03,
                  species_list=None, language="en", below="fade", classifier_files=None)
    values.update(options)
    out = client.predict(files, example, model, top_k, *values.values(), api_name="/predict")
    keys = ["status", "summary", "pick", "species", "removed", "figure", "audio", "position", "calls", "downloads"]
    return dict(zip(keys, out))


def _downloads(client) -> list[str]:
    """/downloads: the files of the client's last /predict under the filters it was shown with."""
    paths, note = client.predict(api_name="/downloads")
    assert note == ""
    return paths


def _column(table, name):
    return [row[table["headers"].index(name)] for row in table["data"]]


def test_predict(client, great_tits, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEnot really audio")
    out = _predict(client, [handle_file(str(great_tits[3].path)), handle_file(str(broken))])
    assert "Analysed 1 file(s)" in out["status"] and "broken.wav" in out["status"]
    assert out["summary"]["data"][0][0] == great_tits[3].path.name and "Parus major" in out["summary"]["data"][0][3]
    assert out["pick"]["value"] == great_tits[3].path.name
    assert _column(out["species"], "scientific name")[0] == "Parus major"
    assert "Parus major" in out["figure"]["plot"]
    assert Path(out["audio"]["value"]).suffix == ".wav"
    assert out["downloads"] is None  # written on demand, below
    downloads = _downloads(client)
    names = sorted(Path(d).name for d in downloads)
    stem = great_tits[3].path.stem
    assert names == sorted(["predictions.csv", f"{stem}.selections.txt", f"{stem}.labels.txt", "embeddings.npz",
                            "settings.json"])
    csv_path = next(d for d in downloads if d.endswith(".csv"))
    assert pd.read_csv(csv_path, comment="#")["scientific_name"].iloc[0] == "Parus major"
    assert np.load(next(d for d in downloads if d.endswith(".npz")))["embeddings"].shape == (1, 1024)


def test_predict_every_option(client, storm_petrels, tmp_path):
    """Each new input of /predict changes what comes back (and what the settings file records)."""
    petrel = [handle_file(str(storm_petrels[0]))]
    base = _predict(client, petrel, top_k=5)
    assert _column(base["species"], "scientific name")[:2] == ["Hydrobates pelagicus", "Laterallus jamaicensis"]
    strict = _predict(client, petrel, top_k=5, min_conf=0.5, below="hide")
    assert _column(strict["species"], "scientific name") == ["Hydrobates pelagicus"]
    keen = _predict(client, petrel, top_k=5, sensitivity=1.5)
    rail = lambda out: float(_column(out["species"], "max score")[1])  # noqa: E731
    assert rail(keen) > rail(base) + 0.3
    overlapped = _predict(client, petrel, overlap_s=1.5)
    assert overlapped["summary"]["data"][0][2] == 8  # 3-s windows every 1.5 s over 14 s (0.5-s rest dropped)
    settings = json.loads(Path(next(d for d in _downloads(client) if d.endswith(".json"))).read_text())
    assert (settings["overlap_s"], settings["hop_s"]) == (1.5, 1.5)
    german = _predict(client, petrel, language="de")
    assert _column(german["species"], "common name")[0] == "Sturmwellenläufer"
    located = _predict(client, petrel, top_k=5, lat="42.45", lon="-76.48", date="2026-05-12", location_threshold=0.03)
    assert "Hydrobates pelagicus" in _column(located["removed"], "scientific name")  # not in New York in May
    assert "Hydrobates pelagicus" not in _column(located["species"], "scientific name")
    settings = json.loads(Path(next(d for d in _downloads(client) if d.endswith(".json"))).read_text())
    assert (settings["latitude"], settings["week"], settings["language"]) == (42.45, 18, "en")
    species_list = tmp_path / "list.txt"
    species_list.write_text("Laterallus jamaicensis\n")
    listed = _predict(client, petrel, species_list=handle_file(str(species_list)))
    assert _column(listed["species"], "scientific name") == ["Laterallus jamaicensis"]


def test_predict_with_your_classifier(client, storm_petrels, tmp_path):
    """/predict's classifier_files: a classifier saved by Find & train scores each window beside BirdNET's species;
    one of another backbone is refused in the status line."""
    from classifier_fixture import save_petrel_classifier

    petrel = [handle_file(str(storm_petrels[0]))]
    files = [handle_file(str(p)) for p in save_petrel_classifier(tmp_path)]
    out = _predict(client, petrel, top_k=2, classifier_files=files)
    assert "Your classifier **petrel**" in out["status"]
    mine = _column(out["species"], "common name").index("your classifier: petrel")
    assert _column(out["species"], "scientific name")[mine] == "storm petrel"
    assert float(_column(out["species"], "max score")[mine]) > 0.9
    assert "your classifier: petrel (storm petrel)" in out["figure"]["plot"]
    csv_path = next(d for d in _downloads(client) if d.endswith(".csv"))
    table = pd.read_csv(csv_path, comment="#")
    assert (table[table.common_name == "your classifier: petrel"].scientific_name == "storm petrel").sum() >= 3
    (tmp_path / "other").mkdir()
    other = [handle_file(str(p)) for p in save_petrel_classifier(tmp_path / "other", "esp_aves2_sl_beats_all")]
    refused = _predict(client, petrel, classifier_files=other)
    assert refused["status"].startswith("⚠️ this classifier was trained on esp_aves2_sl_beats_all embeddings")


def test_predict_bundled_example(client):
    out = _predict(client, [], "storm_petrel_XC46092.wav", 2)
    assert "Hydrobates pelagicus" in out["summary"]["data"][0][3]


def test_predict_without_input_is_a_readable_message(client):
    out = _predict(client, [], "", 3)
    assert out["status"].startswith("⚠️") and "add one or more recordings" in out["status"]


def test_model_without_weights_offline_is_refused_at_once(client):
    from gradio_client.exceptions import ValidationError

    # the inference tab: one status message (the handler checks before it takes a model slot)
    start = time.monotonic()
    out = _predict(client, [], "storm_petrel_XC46092.wav", 3, model="esp_aves2_eat_all")
    assert time.monotonic() - start < 3
    message = out["status"]
    assert "the weights of model 'esp_aves2_eat_all' are not on this machine" in message
    assert "(HF_HUB_OFFLINE is set)" in message and "huggingface-cli download" in message and "://" not in message
    # the embedding map refuses it before it is queued (Gradio's validator)
    start = time.monotonic()
    with pytest.raises(ValidationError, match="not on this machine"):
        client.predict([], None, None, True, "esp_aves2_eat_all", "last_layer", "mean", "PCA", 15, 0.1, "cosine", 30,
                       api_name="/embedding_map")


def test_upload_above_max_file_size_is_refused(app, client, tmp_path):
    big = tmp_path / "big.wav"
    sf.write(big, np.zeros(48000 * 40, dtype=np.float32), 48000, subtype="PCM_16")  # 3.8 MB > 3 MB limit
    with pytest.raises(ValueError, match="exceeds the maximum file size of 3000000 bytes"):
        _predict(client, [handle_file(str(big))], "", 3)
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


def _disk_use(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def test_leaderboard_endpoint_takes_named_parameters(client):
    api = client.view_api(return_format="dict", print_info=False)
    params = [p["parameter_name"] for p in api["named_endpoints"]["/leaderboard"]["parameters"]]
    assert params == ["benchmark", "metric", "probe", "study"]
    answer = client.predict(benchmark="BEANS", metric="accuracy", probe="linear", api_name="/leaderboard")
    assert answer["benchmark"] == "BEANS" and answer["probe"] == "linear" and answer["study"].startswith("Miron")
    table = pd.DataFrame(answer["data"], columns=answer["headers"])
    assert table["Model"].is_unique and len(table) == 20 and "BirdNET" in set(table["Model"])
    assert sorted(answer["datasets"]) == ["bats", "cbi", "dogs", "esc50", "humbugdb", "watkins"]
    ranks = table["Mean rank"].tolist()
    assert ranks == sorted(ranks)
    # the same means and mean ranks as pandas computes them from the raw rows of that study
    from rl_core.leaderboard import load_leaderboard

    raw = load_leaderboard(REPO / "leaderboard_data")
    raw = raw[(raw["benchmark"] == "BEANS") & (raw["metric"] == "accuracy") & (raw["probe"] == "linear")
              & (raw["study"] == answer["study"]) & ~raw["dataset"].str.startswith("mean(")]
    wide = raw.pivot_table(index="model", columns="dataset", values="value", aggfunc="mean")
    table = table.set_index("Model")
    assert np.allclose(table["Mean"], wide.mean(axis=1).reindex(table.index), atol=6e-5)
    assert np.allclose(table["Mean rank"], wide.rank(ascending=False).mean(axis=1).reindex(table.index), atol=6e-3)
    birdset = client.predict(benchmark="BirdSet", api_name="/leaderboard")
    assert birdset["benchmark"] == "BirdSet" and set(birdset["datasets"]).isdisjoint(answer["datasets"])
    with pytest.raises(Exception, match="no metric 'top-5'"):
        client.predict(benchmark="BEANS", metric="top-5", api_name="/leaderboard")


def test_twenty_leaderboard_calls_do_not_grow_disk_use(client, app_tmp):
    client.predict(benchmark="BEANS", api_name="/leaderboard")
    before = _disk_use(app_tmp)
    for i in range(20):
        client.predict(benchmark=["BEANS", "BirdSet"][i % 2], api_name="/leaderboard")
    assert _disk_use(app_tmp) == before


def test_leaderboard_upload_refused_row_by_row_then_accepted(client, leaderboard_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,benchmark,dataset,metric,probe,value,source\n"
                   "My-Net,BEANS,watkins,accuracy,linear,0.8,Lab 2026\n,BEANS,cbi,accuracy,linear,0.7,Lab 2026\n"
                   "My-Net,BEANS,dogs,accuracy,linear,95,Lab 2026\n")
    message, *_ = client.predict(handle_file(str(bad)), api_name="/leaderboard_submit")
    assert "2 of 3 rows refused, nothing stored" in message
    assert "- row 2: 'model' is empty" in message and "- row 3: value must be in [0, 1]" in message
    assert not (leaderboard_dir / "submitted").exists()
    good = tmp_path / "good.csv"
    good.write_text("model,benchmark,dataset,metric,probe,value,source\n"
                    "My-Net,BEANS,watkins,accuracy,linear,0.8,Lab 2026\n"
                    "BirdNET,BEANS,cbi,accuracy,linear,0.7,Lab 2026\n")
    message, *_ = client.predict(handle_file(str(good)), api_name="/leaderboard_submit")
    assert message.startswith("**Stored 2 rows** from good.csv")
    answer = client.predict(benchmark="BEANS", metric="accuracy", probe="linear", study="submitted: Lab 2026",
                            api_name="/leaderboard")
    assert sorted(row[0] for row in answer["data"]) == ["BirdNET", "My-Net"]


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
