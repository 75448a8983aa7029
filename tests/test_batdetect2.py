"""BatDetect2 (issue 15) on real recordings from its repository's example data (tests/data/batdetect2/,
assets/examples/; CC BY-NC 4.0, see assets/LICENSES.md): calls, species, frequencies, exports, zoo and overlay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import rl_core
from rl_core.cache import get_model
from rl_core.errors import ConfigError, RLCoreError
from rl_core.inference import analyse_recording
from rl_core.exports import predictions_csv, raven_selection_table, save_embeddings_npz
from rl_core.models.batdetect2 import SPECIES, weights_path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "batdetect2"
#: recording -> the species annotated in its name (BatDetect2's example_data)
RECORDINGS = {
    DATA / "20170701_213954-MYOMYS-LR_0_0.5.flac": "Myotis mystacinus",
    DATA / "20180530_213516-EPTSER-LR_0_0.5.flac": "Eptesicus serotinus",
    ROOT / "assets" / "examples" / "bat_RHIFER_20180627_215323.wav": "Rhinolophus ferrumequinum",
}
MODEL = "batdetect2_uk"

def analyse(model, path, **kwargs):
    """The one call site of the standard recording path."""
    return analyse_recording(model, path, **kwargs)


pytestmark = pytest.mark.skipif(weights_path() is None, reason="batdetect2 wheel not installed (requirements-data.txt)")


@pytest.fixture(scope="module")
def model():
    return get_model(MODEL, device="cpu")


@pytest.fixture(scope="module")
def results(model):
    return {path: analyse(model, path) for path in RECORDINGS}


def test_checkpoint_is_our_state_dict(model):
    checkpoint = torch.load(weights_path(), map_location="cpu", weights_only=True)["state_dict"]
    ours = model.state_dict()
    assert set(ours) == set(checkpoint)
    assert all(torch.equal(ours[k], checkpoint[k]) for k in checkpoint)


@pytest.mark.parametrize("path", list(RECORDINGS), ids=lambda p: p.name[:30])
def test_known_species_among_top_detections(results, path):
    calls = results[path].calls
    top = calls.sort_values("detection_prob", ascending=False).head(10)
    assert top["detection_prob"].iloc[0] > 0.5
    assert RECORDINGS[path] in set(top["scientific_name"])
    # the species' best probability over the file ranks among the top two (the Myotis file also holds a pipistrelle)
    best = calls[[s for s, _ in SPECIES]].max()
    assert RECORDINGS[path] in best.sort_values(ascending=False).index[:2]


def test_call_table_matches_batdetect2_annotation(results):
    """The repository's annotation of the Myotis example (made by BatDetect2) lists a call at 52.5 ms,
    28046-113192 Hz, whiskered bat 0.679, detection 0.742."""
    calls = results[next(iter(RECORDINGS))].calls
    call = calls.iloc[int(np.argmin(np.abs(calls["start_s"] - 0.0525)))]
    assert call["start_s"] == pytest.approx(0.0525, abs=1e-4) and call["end_s"] == pytest.approx(0.0583, abs=1e-4)
    assert int(call["low_freq_hz"]) == 28046 and int(call["high_freq_hz"]) == 113192
    assert call["scientific_name"] == "Myotis mystacinus" and call["common_name"] == "Whiskered bat"
    assert round(call["class_prob"], 3) == 0.679 and round(call["detection_prob"], 3) == 0.742


def test_outputs_per_call_and_per_window(results, model):
    result = results[next(iter(RECORDINGS))]
    n = len(result.calls)
    assert n == 51  # 0.5 s -> the official top-k of 51 peaks, all above the 0.01 threshold here
    assert result.call_features.shape == (n, 32) and np.isfinite(result.call_features).all()
    probs = result.calls[[s for s, _ in SPECIES]].to_numpy()
    assert np.allclose(probs.sum(axis=1), result.calls["detection_prob"], atol=1e-5)  # detection = 1 - background
    assert (result.calls["high_freq_hz"] > result.calls["low_freq_hz"]).all()
    assert result.calls["start_s"].is_monotonic_increasing
    assert result.embeddings.shape == (1, 256) and result.scores.shape == (1, 17)
    assert result.scores[0].max() == pytest.approx(result.calls["class_prob"].max(), abs=1e-6)
    assert model.list_layers() == ["conv_dn_0", "conv_dn_1", "conv_dn_2", "encoder", "bottleneck"]
    audio = torch.zeros(1, 256000)
    assert model.extract_embeddings(audio, layers="bottleneck").shape == (1, 256)
    assert model.extract_embeddings(audio, layers=["conv_dn_0", "encoder"]).shape == (1, 32 + 256)
    assert model(audio).shape == (1, 17)


def test_csv_raven_and_npz_carry_calls(results, tmp_path):
    result = results[next(iter(RECORDINGS))]
    csv = pd.read_csv(pd.io.common.StringIO(predictions_csv([result], min_score=0.5)))
    strong = result.calls_table(0.5)
    assert len(csv) == len(strong) > 0
    assert list(csv.columns[:9]) == ["file", "start_s", "end_s", "low_freq_hz", "high_freq_hz", "detection_prob",
                                     "scientific_name", "common_name", "class_prob"]
    raven = pd.read_csv(pd.io.common.StringIO(raven_selection_table(result, min_score=0.5)), sep="\t")
    assert len(raven) == len(strong)
    assert np.allclose(raven["Low Freq (Hz)"], strong["low_freq_hz"], atol=0.5)
    assert np.allclose(raven["High Freq (Hz)"], strong["high_freq_hz"], atol=0.5)
    assert raven["High Freq (Hz)"].max() < 125_000 and raven["Low Freq (Hz)"].min() >= 10_000  # not 0..Nyquist
    npz = np.load(save_embeddings_npz([result], tmp_path / "e.npz"))
    assert npz["call_features"].shape == (len(result.calls), 32)
    assert npz["call_file_index"].tolist() == [0] * len(result.calls)
    np.testing.assert_allclose(npz["call_start_s"], result.calls["start_s"])


def test_cli_predict_writes_one_row_per_call(tmp_path):
    from rl_core.cli import main

    path = next(iter(RECORDINGS))
    out = tmp_path / "calls.csv"
    assert main(["predict", MODEL, str(path), "--min-score", "0.5", "--csv", str(out)]) == 0
    table = pd.read_csv(out)
    assert len(table) > 5 and set(table["common_name"]) >= {"Whiskered bat"}
    assert (table["detection_prob"] >= 0.5).all() and (table["low_freq_hz"] > 10_000).all()


def test_48khz_recording_is_refused_clearly(model, tmp_path):
    path = tmp_path / "dusk_48k.wav"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32), 48000)
    with pytest.raises(RLCoreError, match=r"dusk_48k.wav is sampled at 48000 Hz: too low for bat"):
        analyse(model, path)


def test_overlapping_hop_refused(model):
    with pytest.raises(ConfigError, match="leave the hop unset"):
        analyse(model, next(iter(RECORDINGS)), hop_s=1.0)


def test_zoo_shows_model_on_this_machine():
    from ui.zoo import zoo_table

    info = rl_core.list_models(print_table=False)[MODEL]
    assert info["weights"] == "bundled" and info["license"] == "CC BY-NC 4.0"
    assert "Pipistrellus pygmaeus (Soprano pipistrelle)" in info["description"]
    row = zoo_table("soprano pipistrelle").set_index("Model").loc[MODEL]
    assert row["Weights"] == "bundled (runs offline)" and row["Classes"] == 17 and row["Sample rate (Hz)"] == 256000


def test_inference_tab_lists_calls_and_exports_raven(results):
    """The inference tab's handler with the bundled bat example: calls listed and boxed on the spectrogram, Raven
    with real frequencies, and the 10x time-expanded player."""
    from ui import inference_figure, inference_downloads, inference_view

    example = list(RECORDINGS)[2]
    options = inference_view.Options()
    run = inference_view.analyse(None, MODEL, top_k=3, example=example.name)
    shown = inference_view.render(run, options)
    view = shown.files[example.name]
    assert len(view.calls) == len(results[example].calls_table(options.min_conf)) > 3
    assert view.calls["common name"].iloc[0] == "Greater horseshoe bat"
    assert view.species.iloc[0]["scientific name"] == "Rhinolophus ferrumequinum"
    heard = inference_figure.listen(run, example.name, view, 0.0, view.duration_s, options)
    assert "time expansion" in heard.caption
    boxes = [s for s in heard.figure.layout.shapes if s.type == "rect"]
    in_view = view.calls[(view.calls["start (s)"] <= heard.end_s) & (view.calls["end (s)"] >= heard.start_s)]
    assert len(boxes) == len(in_view) > 3 and boxes[0].y0 == in_view["low (kHz)"].iloc[0]
    raven = next(d for d in inference_downloads.write_exports(run, options) if d.endswith(".selections.txt"))
    table = pd.read_csv(raven, sep="\t")
    assert len(table) == len(view.calls)
    assert np.allclose(table["Low Freq (Hz)"] / 1000, view.calls["low (kHz)"], atol=0.06)
    assert np.allclose(table["High Freq (Hz)"] / 1000, view.calls["high (kHz)"], atol=0.06)


@pytest.mark.slow  # about 25 s on 2 busy cores: 6.5 s of 384 kHz audio, three times
def test_batched_windows_and_short_last_chunk_match_one_by_one(model, tmp_path):
    """6.5 s: two full 3-s chunks batched together and a 0.5-s last chunk processed at its own length give the
    same calls as one window at a time; call times run on across chunks."""
    path = list(RECORDINGS)[2]
    audio, rate = sf.read(path, dtype="int16")
    long = tmp_path / "rhifer_x13.wav"
    sf.write(long, np.tile(audio, 13), rate, subtype="PCM_16")
    one = analyse(model, long, batch_size=1)
    batched = analyse(model, long, batch_size=3)
    assert one.num_windows == 3 and len(one.calls) == len(batched.calls) > 100
    assert np.allclose(one.calls["start_s"], batched.calls["start_s"])
    assert np.allclose(one.calls["detection_prob"], batched.calls["detection_prob"], atol=1e-5)
    assert np.allclose(one.call_features, batched.call_features, atol=1e-4)
    assert one.calls["start_s"].max() > 6.0 and (one.calls["end_s"] <= 6.5 + 0.1).all()
    # the short last chunk alone, as its own recording, finds the same calls (shifted by 6 s)
    tail = tmp_path / "rhifer_tail.wav"
    sf.write(tail, audio, rate, subtype="PCM_16")
    alone = analyse(model, tail).calls
    found = one.calls.set_index(["start_s", "low_freq_hz"])["detection_prob"]
    for call in alone.itertuples(index=False):
        close = found[(np.abs(found.index.get_level_values(0) - (call.start_s + 6.0)) < 1e-6)
                      & (found.index.get_level_values(1) == call.low_freq_hz)]
        assert len(close) == 1 and close.iloc[0] == pytest.approx(call.detection_prob, abs=1e-5)


def test_archive_project_and_search_with_batdetect2(tmp_path):
    """A folder of bat recordings becomes a project as with BirdNET: per-window species in the store and the
    exports, and the window embeddings searchable."""
    import shutil

    from rl_core.project import ProjectStore, RunSettings, analyse_project
    from rl_core.project.exports import export_project
    from rl_core.project.search import search

    folder = tmp_path / "night"
    folder.mkdir()
    for path in RECORDINGS:
        shutil.copy(path, folder / path.name)
    summary = analyse_project([folder], tmp_path / "project", RunSettings(MODEL), engine="inline")
    assert (summary.done, summary.failed) == (3, 0)
    written = export_project(tmp_path / "project", tmp_path / "out", formats=["csv"])
    detections = pd.read_csv(written["csv"][0])
    for path, species in RECORDINGS.items():
        found = detections[detections["file"] == path.name]
        assert species in set(found["scientific_name"]), (path.name, found["scientific_name"].tolist())
    horseshoe = next(p.name for p in RECORDINGS if "RHIFER" in p.name)
    hits = search(tmp_path / "project", [f"{horseshoe}#0"], top_n=3)
    assert hits["file"].iloc[0] == horseshoe and hits["similarity"].iloc[0] > 0.99
    with ProjectStore(tmp_path / "project", read_only=True) as store:
        assert store.embeddings(store.default_run())[1].shape == (3, 256)


def test_embedding_map_puts_one_point_per_call():
    """With a call detector the embedding map plots each call's feature vector, labelled by its recording."""
    from ui.embedding_map import build_map

    files = [str(p) for p in RECORDINGS]
    result = build_map(files, None, None, False, MODEL, "last_layer", "mean", "PCA", 15, 0.1, "euclidean", 30)
    counts = {p.name: len(analyse(get_model(MODEL), p).calls_table(0.3)) for p in RECORDINGS}
    assert len(result.points) == sum(counts.values()) > 10
    for name, n in counts.items():
        assert result.points["file"].str.startswith(f"{name} @ ").sum() == n
    assert "calls" in result.figure.layout.title.text
