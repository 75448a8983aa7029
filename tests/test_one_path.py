"""One path from a recording to windows, scores and embeddings: every caller gets the same vectors; the npz
layout; summaries from the result object; one header read per request; bounded work; unique output names."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from rl_core import cli
from rl_core.exports import RAVEN_COLUMNS
from rl_core.audio import count_windows, iter_windows
from rl_core.errors import ConfigError, LimitExceededError, UnsupportedSampleRateError
from rl_core.evaluation.datasets import AudioDataset, Clip
from rl_core.evaluation.embedding_cache import EmbeddingCache, embed_dataset
from rl_core.inference import AnalysisLimits, analyse_recording, unique_names
from rl_core.exports import NPZ_KEYS, load_embeddings_npz, pooled_file_embeddings, save_embeddings_npz
from rl_core.projection import file_embedding

REPO = Path(__file__).resolve().parents[1]
MODEL = "birdnet_v2_4"


@pytest.fixture(scope="module")
def birdnet():
    from rl_core.cache import get_model

    return get_model(MODEL)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rl_core", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)


# --------------------------------------------------------------------------- one path, identical vectors
def test_every_caller_embeds_a_recording_identically(tmp_path, birdnet, storm_petrels):
    """API, CLI `embed`, the embedding map, the evaluation cache (the benchmark runner's path) and the app's
    inference tab all give the same window and file vectors for one real 14-s, 44.1 kHz recording."""
    from ui import embedding_map, inference_downloads, inference_view

    path = storm_petrels[0]
    api = analyse_recording(birdnet, path)
    assert api.num_windows == 5 and api.embeddings.shape == (5, 1024)  # 4 whole windows + a 2-s tail
    assert api.starts.tolist() == [0.0, 3.0, 6.0, 9.0, 12.0] and api.ends[-1] == pytest.approx(14.0016, abs=1e-3)
    pooled = api.pooled_embedding()

    out = tmp_path / "cli.npz"
    assert cli.main(["embed", MODEL, str(path), "--out", str(out)]) == 0
    cli_npz = load_embeddings_npz(out)
    np.testing.assert_array_equal(cli_npz["embeddings"], api.embeddings)
    files, vectors = pooled_file_embeddings(out)
    assert files == [path.name]
    np.testing.assert_array_equal(vectors[0], pooled)

    np.testing.assert_array_equal(file_embedding(birdnet, path), pooled)

    dataset = AudioDataset("one", [Clip(path, ("x",))])
    cache = EmbeddingCache(tmp_path / "cache", MODEL, "sha", sample_rate=birdnet.sample_rate,
                           window_samples=birdnet.window_samples)
    # the benchmark runner's call (rl_core.evaluation.runner.run_benchmark spells the default layer as a list)
    np.testing.assert_array_equal(embed_dataset(birdnet, dataset, cache, ["last_layer"], "mean", progress=False)[0],
                                  pooled)
    np.testing.assert_array_equal(np.load(cache.path_for(dataset.clips[0])), pooled)  # what a rerun reads

    mapped = embedding_map.build_map([str(path), str(storm_petrels[1])], model_name=MODEL, method="PCA")
    np.testing.assert_array_equal(np.load(mapped.downloads[1])["embeddings"][0], pooled)

    app = inference_downloads.write_exports(inference_view.analyse([str(path)], MODEL, 3), inference_view.Options())
    app_npz = load_embeddings_npz(next(d for d in app if d.endswith(".npz")))
    np.testing.assert_array_equal(app_npz["embeddings"], api.embeddings)


def test_intermediate_layer_same_through_api_map_and_cache(tmp_path, great_tits):
    """A layer other than the last: extract_embeddings on the same windows, whichever caller asks."""
    from tiny_model import register_tiny

    from rl_core.loading import build_model

    model = build_model(register_tiny("tiny_one_path"))
    path = great_tits[0].path  # 2.5 s at 22.05 kHz -> two whole 1-s windows and a 0.48-s tail (kept: >= 0.25 s)
    api = analyse_recording(model, path, layers="layer1", aggregation="max")
    assert api.embeddings.shape == (3, 16) and api.layer == "layer1"
    pooled = api.pooled_embedding("max")
    np.testing.assert_array_equal(file_embedding(model, path, layer="layer1", pooling="max"), pooled)
    dataset = AudioDataset("one", [Clip(Path(path), ("x",))])
    via_cache = embed_dataset(model, dataset, None, layers="layer1", aggregation="max", progress=False)[0]
    np.testing.assert_array_equal(via_cache, api.pooled_embedding("mean"))  # the cache pools windows by mean
    last = analyse_recording(model, path)  # default: the pooled embedding, computed with the head in one pass
    assert last.embeddings.shape == (3, 16) and not np.allclose(last.embeddings, api.embeddings)
    runner_default = embed_dataset(model, dataset, None, ["last_layer"], "mean", progress=False)[0]
    np.testing.assert_array_equal(runner_default, last.pooled_embedding())


def test_segment_array_equals_its_own_file(tmp_path, birdnet, storm_petrels):
    """A dataset segment given as an array is windowed by the same rule as a file holding just that audio."""
    from rl_core.audio import load_audio

    audio48 = load_audio(storm_petrels[0], 48000)[0][: 7 * 48000]  # at BirdNET's rate: neither side resamples
    seg = tmp_path / "seg.wav"
    sf.write(seg, audio48, 48000, subtype="FLOAT")
    from_file = analyse_recording(birdnet, seg)
    from_array = analyse_recording(birdnet, audio48, sample_rate=48000, name="seg")
    assert from_file.num_windows == from_array.num_windows == 3  # 2 whole windows + a 1-s tail
    np.testing.assert_array_equal(from_file.embeddings, from_array.embeddings)
    np.testing.assert_array_equal(from_file.scores, from_array.scores)
    assert from_array.name == "seg" and from_array.file is None


@pytest.mark.parametrize("seconds,hop,expected", [
    (10.0, 3.0, [0.0, 3.0, 6.0, 9.0]),           # 1-s tail >= 0.75 s: kept
    (9.5, 3.0, [0.0, 3.0, 6.0]),                 # 0.5-s tail < a quarter window: dropped
    (2.0, 3.0, [0.0]),                           # shorter than a window: one padded window
    (10.0, 1.5, [0.0, 1.5, 3.0, 4.5, 6.0, 7.5]),  # the window at 7.5 s covers 1 s that none did before
    (12.0, 5.0, [0.0, 5.0, 10.0]),               # hop > window: 2 s of fresh audio at 10 s
])
def test_last_window_rule(tmp_path, seconds, hop, expected):
    sr = 8000
    path = tmp_path / "tone.wav"
    sf.write(path, (0.1 * np.sin(np.arange(int(seconds * sr)) / 7)).astype(np.float32), sr)
    starts = [s for s, _ in iter_windows(path, sr, 3.0, hop)]
    assert starts == expected
    assert count_windows(int(seconds * sr), sr, 3.0, hop) == len(expected)


# --------------------------------------------------------------------------- the npz layout
def _check_layout(data: dict, files: list[str], windows: list[int], model: str) -> None:
    assert set(NPZ_KEYS) <= set(data)
    n = sum(windows)
    assert data["embeddings"].shape == (n, 1024) and data["embeddings"].dtype == np.float32
    assert data["file_index"].tolist() == [i for i, w in enumerate(windows) for _ in range(w)]
    assert [str(f) for f in data["files"]] == files
    assert data["start_s"].shape == data["end_s"].shape == (n,)
    assert (data["end_s"] > data["start_s"]).all() and data["start_s"][0] == 0.0
    assert str(data["model"]) == model and str(data["layer"]) == "last_layer"


def test_cli_and_app_write_one_npz_layout(tmp_path, storm_petrels):
    from ui import inference_downloads, inference_view

    out = tmp_path / "emb.npz"
    result = run_cli("embed", MODEL, *map(str, storm_petrels), "--out", str(out))
    assert result.returncode == 0, result.stderr
    names = [p.name for p in storm_petrels]
    cli_data = load_embeddings_npz(out)
    _check_layout(cli_data, names, [5, 5], MODEL)
    app = inference_downloads.write_exports(inference_view.analyse([str(p) for p in storm_petrels], MODEL, 3),
                                       inference_view.Options())
    app_data = load_embeddings_npz(next(d for d in app if d.endswith(".npz")))
    _check_layout(app_data, names, [5, 5], MODEL)
    np.testing.assert_array_equal(cli_data["embeddings"], app_data["embeddings"])
    np.testing.assert_array_equal(cli_data["start_s"], app_data["start_s"])
    files, pooled = pooled_file_embeddings(app_data)
    assert files == names and pooled.shape == (2, 1024)
    np.testing.assert_allclose(pooled[1], app_data["embeddings"][5:].mean(axis=0), rtol=1e-6)


def test_npz_reader_refuses_other_files(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, embeddings=np.zeros((2, 3), np.float32))
    with pytest.raises(ConfigError, match="other.npz: not a window-embeddings file"):
        load_embeddings_npz(other)
    with pytest.raises(ConfigError, match="no window embeddings"):
        save_embeddings_npz([], tmp_path / "none.npz")


# --------------------------------------------------------------------------- summaries from the result
def test_summary_timeline_and_sparse_scores(birdnet, storm_petrels):
    dense = analyse_recording(birdnet, storm_petrels[1], hop_s=1.5)
    sparse = analyse_recording(birdnet, storm_petrels[1], hop_s=1.5, keep_top=20, want_embeddings=False)
    assert sparse.scores is None and sparse.top_scores.shape == (dense.num_windows, 20)
    assert sparse.embeddings is None
    summary = dense.file_summary(3)
    assert summary.scientific_name[0] == "Hydrobates pelagicus"
    scores = dense.scores[:, dense.labels.index("Hydrobates pelagicus")]
    assert summary.max_score[0] == pytest.approx(scores.max())
    assert summary.mean_score[0] == pytest.approx(scores.mean())
    assert summary.best_window_start_s[0] == dense.starts[int(np.argmax(scores))]
    assert summary.windows_at_or_above[0] == int((scores >= 0.5).sum())
    # the top class is in every window's top 20, so the sparse summary of it is exact
    sparse_summary = sparse.file_summary(3)
    assert sparse_summary.scientific_name[0] == "Hydrobates pelagicus"
    assert sparse_summary.iloc[0, 3:].tolist() == pytest.approx(summary.iloc[0, 3:].tolist())
    pd.testing.assert_frame_equal(sparse.top_k_table(5), dense.top_k_table(5))
    timeline = dense.timeline(4)
    assert len(timeline.labels) == 4 and timeline.scores.shape == (4, dense.num_windows)
    assert timeline.labels[0] == "European Storm-Petrel (Hydrobates pelagicus)"
    np.testing.assert_allclose(timeline.scores[0], scores, rtol=1e-6)
    assert timeline.edges == [*timeline.starts, float(dense.ends[-1])]
    np.testing.assert_allclose(sparse.timeline(4).scores[0], scores, rtol=1e-6)


def test_ui_species_table_comes_from_the_result(birdnet, storm_petrels):
    from ui.inference_view import SPECIES_COLUMNS, species_table

    result = analyse_recording(birdnet, storm_petrels[1])
    table = species_table(result, 3)
    summary = result.file_summary(3)
    assert list(table.columns) == SPECIES_COLUMNS and len(table) == 3
    assert table["scientific name"].tolist() == summary.scientific_name.tolist()
    assert table["max score"].tolist() == summary.max_score.round(4).tolist()


# --------------------------------------------------------------------------- header read once
def test_inference_request_reads_each_header_once(tmp_path, storm_petrels, monkeypatch):
    """One upload: soundfile reads its header once (audio_info); the model's pass and the first-minute preview
    (the first view, shared by the spectrogram and the player) decode it once each (sf.info opens the file too: 3 opens)."""
    from ui import inference, inference_view

    inference_view.analyse([str(storm_petrels[0])], MODEL, 3)  # warm the model outside the count
    calls = {"info": 0, "open": 0, "read": 0}
    real_info, real_file = sf.info, sf.SoundFile

    def counting_info(*args, **kwargs):
        calls["info"] += 1
        return real_info(*args, **kwargs)

    class CountingFile(real_file):
        def __init__(self, *args, **kwargs):
            mode = args[1] if len(args) > 1 else kwargs.get("mode", "r")
            calls["open"] += "r" in mode  # the player's WAV copy is written, not read
            super().__init__(*args, **kwargs)

        def read(self, *args, **kwargs):
            calls["read"] += 1
            return super().read(*args, **kwargs)

    monkeypatch.setattr(sf, "info", counting_info)
    monkeypatch.setattr(sf, "SoundFile", CountingFile)
    run = inference_view.analyse([str(storm_petrels[0])], MODEL, 3)
    inference._outputs(run, inference_view.Options())  # what the page shows: tables, spectrogram and player
    assert not run.errors and len(run.results) == 1
    assert calls == {"info": 1, "open": 3, "read": 2}  # 14 s: one block for the model, one for the view


# --------------------------------------------------------------------------- bounded work
def _one_hertz_wav(path: Path) -> Path:
    """7 KB whose header says 1 Hz: 3,600 samples would be analysed as one hour."""
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(3600)).astype(np.float32), 1, subtype="PCM_16")
    assert path.stat().st_size < 8000
    return path


def test_absurd_sample_rate_refused_before_decoding(tmp_path, birdnet, monkeypatch):
    path = _one_hertz_wav(tmp_path / "one_hertz.wav")
    decoded = []
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: decoded.append(a) or pytest.fail("decoded"))
    t0 = time.perf_counter()
    with pytest.raises(UnsupportedSampleRateError, match=r"one_hertz.wav: its header says 1 Hz, outside the "
                                                         r"1,000-1,000,000 Hz"):
        analyse_recording(birdnet, path)
    assert time.perf_counter() - t0 < 1.0 and not decoded


def test_duration_and_window_limits(tmp_path, birdnet, storm_petrels, monkeypatch):
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("decoded before the limits were checked"))
    too_long = r"XC46092.wav: 14.0 s of audio exceeds the limit of 10 s .*--max-duration"
    with pytest.raises(LimitExceededError, match=too_long):
        analyse_recording(birdnet, storm_petrels[0], limits=AnalysisLimits(max_duration_s=10))
    with pytest.raises(LimitExceededError, match=r"105,\d{3} analysis windows .* limit of 20,000 .*--max-windows"):
        analyse_recording(birdnet, storm_petrels[0], hop_s=0.0001)
    with pytest.raises(ConfigError, match="hop must be a positive number"):
        analyse_recording(birdnet, storm_petrels[0], hop_s=0)
    with pytest.raises(ConfigError, match="AnalysisLimits.max_windows must be a positive number"):
        AnalysisLimits(max_windows=0)


def test_cli_refuses_unbounded_work_in_one_line(tmp_path, storm_petrels):
    one_hertz = _one_hertz_wav(tmp_path / "one_hertz.wav")
    t0 = time.perf_counter()
    result = run_cli("predict", MODEL, str(one_hertz))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "one_hertz.wav: its header says 1 Hz" in errors[0]
    result = run_cli("predict", MODEL, str(storm_petrels[0]), "--hop", "0.0001")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "analysis windows" in errors[0] and "--max-windows" in errors[0]
    # the limit is a setting: raised, a short hop is accepted (on a 6-s clip: 61 windows at 0.05 s)
    short = tmp_path / "short.wav"
    sf.write(short, sf.read(storm_petrels[0], frames=6 * 44100)[0], 44100)
    result = run_cli("predict", MODEL, str(short), "--hop", "0.05", "--max-windows", "100", "--top-k", "1")
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(io.StringIO(result.stdout))) == 61
    assert time.perf_counter() - t0 < 120


# --------------------------------------------------------------------------- unique names
def test_unique_names():
    assert unique_names(["song.wav", "Song.wav", "a.wav", "song.wav", "song (2).wav"]) == [
        "song.wav", "Song (2).wav", "a.wav", "song (3).wav", "song (2) (2).wav"]


def test_two_uploads_with_one_name_stay_apart(tmp_path, storm_petrels):
    from ui import inference_downloads, inference_view

    uploads = []
    for i, source in enumerate(storm_petrels):
        folder = tmp_path / f"upload{i}"
        folder.mkdir()
        target = folder / "song.wav"
        target.write_bytes(Path(source).read_bytes())
        uploads.append(str(target))
    # minimum confidence 0: every window's top 2 reaches the downloads
    run = inference_view.analyse(uploads, MODEL, 2)
    result = inference_view.render(run, inference_view.Options(min_conf=0.0))
    downloads = inference_downloads.write_exports(run, inference_view.Options(min_conf=0.0))
    assert list(result.files) == ["song.wav", "song (2).wav"] and not result.errors
    assert "upload 2 (song.wav) is song (2).wav" in result.message
    names = sorted(Path(d).name for d in downloads)
    assert names == ["embeddings.npz", "predictions.csv", "settings.json", "song (2).labels.txt",
                     "song (2).selections.txt", "song.labels.txt", "song.selections.txt"]
    by_name = {Path(d).name: Path(d) for d in downloads}
    first = pd.read_csv(by_name["song.selections.txt"], sep="\t")
    second = pd.read_csv(by_name["song (2).selections.txt"], sep="\t")
    assert len(first) and set(first["Begin File"]) == {"song.wav"} and set(first["Begin Path"]) == {"song.wav"}
    assert len(second) and set(second["Begin File"]) == {"song (2).wav"}
    # one Raven writer: the columns of a project's selection tables (BirdNET-Analyzer's), eBird codes included
    assert tuple(first.columns) == RAVEN_COLUMNS and (first["File Offset (s)"] == first["Begin Time (s)"]).all()
    assert (first.loc[first["Scientific Name"] == "Hydrobates pelagicus", "Species Code"] == "bripet").sum() >= 1
    table = pd.read_csv(by_name["predictions.csv"], comment="#")  # every window of each file, top 2
    assert table.groupby("file").size().to_dict() == {"song.wav": 10, "song (2).wav": 10}
    npz = load_embeddings_npz(by_name["embeddings.npz"])
    assert npz["files"].tolist() == ["song.wav", "song (2).wav"]
    assert np.bincount(npz["file_index"]).tolist() == [5, 5]
    assert not np.array_equal(npz["embeddings"][:5], npz["embeddings"][5:])  # two recordings, both kept
    assert result.summary["file"].tolist() == ["song.wav", "song (2).wav"]
