"""BirdNET V2.4 on real recordings from the pykanto wheel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rl_core
from rl_core import describe_model, load_model
from rl_core.cache import get_model
from rl_core.errors import ConfigError
from rl_core.inference import analyse_recording


@pytest.fixture(scope="module")
def birdnet():
    return get_model("birdnet_v2_4")


def test_describe_shows_licence_and_classes(capsys):
    info = describe_model("birdnet_v2_4", verbose=True)
    assert info["num_classes"] == 6522 and info["embedding_dim"] == 1024
    out = capsys.readouterr().out
    assert "CC BY-NC-SA 4.0" in out and "48000 Hz (other rates resampled with fft)" in out


def test_outputs_and_labels(birdnet):
    logits = birdnet(torch.zeros(2, 144000))
    assert logits.shape == (2, 6522)
    embeddings = load_model("birdnet_v2_4", return_features_only=True)(torch.zeros(1, 144000))
    assert embeddings.shape == (1, 1024)
    labels = birdnet.class_labels
    assert len(labels) == 6522 and labels[labels.index("Parus major")] == "Parus major"
    assert birdnet.common_names[labels.index("Parus major")] == "Great Tit"


def test_fixed_head(birdnet):
    with pytest.raises(ConfigError, match="train a probe"):
        load_model("birdnet_v2_4", num_classes=10)


def test_great_tit_top1_on_all_twenty_songs(birdnet, great_tits):
    assert len(great_tits) == 20
    tops = []
    for song in great_tits:
        result = analyse_recording(birdnet, song.path)
        tops.append(result.file_summary(1).scientific_name[0])
    assert tops == ["Parus major"] * 20


def test_storm_petrel_scores(birdnet, storm_petrels):
    assert len(storm_petrels) == 2
    for path in storm_petrels:
        result = analyse_recording(birdnet, path)
        index = result.labels.index("Hydrobates pelagicus")
        assert result.scores[:, index].max() >= 0.95
        table = result.top_k_table(3)
        assert list(table.columns) == ["file", "start_s", "end_s", "rank", "scientific_name", "common_name", "score"]
        assert (table[table["rank"] == 1].common_name == "European Storm-Petrel").mean() > 0.5


def test_embeddings_tell_individuals_apart(birdnet, great_tits):
    """Leave-one-out 1-NN (cosine) on pooled embeddings separates the two great tits."""
    pooled = np.stack([analyse_recording(birdnet, s.path, want_scores=False).pooled_embedding() for s in great_tits])
    labels = np.array([s.label for s in great_tits])
    assert sorted(set(labels)) == ["B32", "SW83"]
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    correct = int((labels[similarity.argmax(axis=1)] == labels).sum())
    assert correct >= 18, f"only {correct}/20 songs matched their individual"


def test_windows_and_batching_agree(birdnet, storm_petrels):
    result = analyse_recording(birdnet, storm_petrels[0], hop_s=1.5)
    assert np.allclose(np.diff(result.starts), 1.5)
    single = birdnet.embed_and_score(torch.zeros(1, 144000))[1]
    double = birdnet.embed_and_score(torch.zeros(2, 144000))[1]
    torch.testing.assert_close(double[0], single[0])


def test_numpy_input_path_keeps_the_documented_conversions(birdnet):
    """prepare_input checks float32 batches in numpy (no torch op: bench/RESULTS.md) and defers the rest."""
    from rl_core.errors import InvalidAudioTensorError

    rng = np.random.default_rng(0)
    clip = (rng.standard_normal((2, 144000)) * 0.1).astype(np.float32)
    fast = birdnet.prepare_input(clip)
    assert fast.dtype == torch.float32 and fast.shape == (2, 144000)
    assert np.array_equal(fast.numpy(), clip)
    assert birdnet.prepare_input(torch.from_numpy(clip[0])).shape == (1, 144000)  # 1-D gains a batch axis
    assert birdnet.prepare_input(np.zeros((1, 1000), np.float32)).shape == (1, 144000)  # short clips padded
    pcm = (clip[:1] * 32767).astype(np.int16)
    torch.testing.assert_close(birdnet.prepare_input(pcm), torch.from_numpy(pcm.astype(np.float32) / 32768.0))
    torch.testing.assert_close(birdnet.prepare_input(torch.from_numpy(clip).to(torch.bfloat16)),
                               torch.from_numpy(clip).to(torch.bfloat16).float())
    bad = clip.copy()
    bad[1, 5] = np.nan
    with pytest.raises(InvalidAudioTensorError, match="NaN"):
        birdnet.embed_and_score(bad)
    embeddings, scores = birdnet.embed_and_score(clip)
    assert embeddings.shape == (2, 1024) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, torch.sigmoid(birdnet(torch.from_numpy(clip))), rtol=1e-5, atol=1e-6)


def test_registry_parameter_count_matches_the_tflite_file():
    """The YAML's parameter count is the number of elements in the model file's constant tensors."""
    from ai_edge_litert import schema_py_generated as schema

    from rl_core.models.birdnet import MODEL_FILE, birdnet_dir
    from rl_core.registry import get_model_entry

    raw = (birdnet_dir() / MODEL_FILE).read_bytes()
    model = schema.Model.GetRootAsModel(raw, 0)
    graph = model.Subgraphs(0)
    total = 0
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        buffer = model.Buffers(tensor.Buffer())
        if buffer is not None and buffer.DataLength() > 0:
            total += int(np.prod(tensor.ShapeAsNumpy())) if tensor.ShapeLength() else 1
    assert get_model_entry("birdnet_v2_4").parameters == total


def test_a_requested_gpu_leaves_birdnet_on_the_cpu(birdnet, caplog):
    """LiteRT computes on the CPU: with --device cuda (or auto on a GPU machine) BirdNET must keep CPU inputs."""
    import logging

    with caplog.at_level(logging.INFO, logger="rl_core.models.base"):
        on_gpu_request = load_model("birdnet_v2_4", device="cuda")
        built = rl_core.build_model("birdnet_v2_4", device="cuda")
    assert on_gpu_request.device == built.device == torch.device("cpu")
    assert "BirdNET computes on the CPU; ignoring device cuda" in caplog.text
    pcm = (np.random.default_rng(1).standard_normal((1, 144000)) * 3000).astype(np.int16)  # the torch input path
    assert on_gpu_request.prepare_input(pcm).device.type == "cpu"
    embeddings, scores = on_gpu_request.embed_and_score(pcm)
    torch.testing.assert_close(scores, birdnet.embed_and_score(pcm)[1])


def test_birdnet_resamples_as_the_official_package(birdnet):
    assert birdnet.resampling == "fft"
    assert load_model("birdnet_v2_4").resampling == "fft"


def test_scores_match_the_official_package_at_44k_32k_and_22k(birdnet):
    """The official package's scores (fixture) on real 44.1/32/22.05 kHz recordings: within 1e-3 (measured 1e-6;
    librosa's kaiser_best instead of the package's per-segment FFT resampling moves them by up to 0.02)."""
    import json
    from pathlib import Path

    import soundfile as sf

    from rl_core.datasets_bundled import package_dir

    record = json.loads((Path(__file__).parent / "fixtures" / "birdnet_official_scores.json").read_text())
    rates = set()
    for entry in record["files"]:
        path = package_dir(entry["package"]) / entry["path"]
        rates.add(sf.info(str(path)).samplerate)
        result = analyse_recording(birdnet, path)
        # The official package also scores a last tail shorter than a quarter window (0.75 s); rl_core's one
        # last-window rule drops such a tail, so it may have one window fewer, never another difference.
        info = sf.info(str(path))
        tail_s = info.duration - 3.0 * (len(entry["scores"]) - 1)
        expected = len(entry["scores"]) - (1 if 0 < tail_s < 0.75 else 0)
        assert result.num_windows == expected
        for w, (names, scores) in enumerate(zip(entry["species"][:expected], entry["scores"][:expected])):
            ours = result.scores[w, [result.labels.index(n) for n in names]]
            np.testing.assert_allclose(ours, scores, atol=1e-3, err_msg=f"{path.name}, window {w}")
    assert rates == {44100, 32000, 22050}


def test_concurrent_calls_each_get_an_interpreter(great_tits):
    """Issue 16 (under load): one model object serves `workers` calls at once, one LiteRT interpreter each,
    with the same results as one call at a time; interpreters are made only when calls overlap."""
    import contextlib
    import threading

    from rl_core.audio import load_audio
    from rl_core.models.birdnet import BirdNET

    model = BirdNET(workers=2, num_threads=1)
    assert model.max_concurrent_calls == 2 and model.litert._created == 1
    windows = [load_audio(r.path, 48000)[0][:144000] for r in great_tits[:4]]
    windows = [np.pad(w, (0, 144000 - w.shape[0]))[None, :] for w in windows]
    expected = [model.embed_and_score(w) for w in windows]
    assert model.litert._created == 1  # one caller at a time: one interpreter
    start, results, inside, peak = threading.Barrier(4), {}, [0], [0]
    original, lock = model.litert._interpreter, threading.Lock()

    def counting():  # how many calls hold an interpreter at the same moment
        with original() as interpreter:
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            try:
                yield interpreter
            finally:
                with lock:
                    inside[0] -= 1

    model.litert._interpreter = contextlib.contextmanager(counting)

    def call(i: int) -> None:
        start.wait()
        results[i] = [model.embed_and_score(windows[i]) for _ in range(3)]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert model.litert._created == 2 and peak[0] == 2
    for i, runs in results.items():
        for embedding, scores in runs:
            assert torch.equal(embedding, expected[i][0]) and torch.equal(scores, expected[i][1])
    assert int(expected[0][1].argmax()) == model.label_mapping["label_to_index"]["Parus major"]


def test_numpy_mel_front_end_and_cut_graph_give_the_whole_graphs_scores(storm_petrels, great_tits):
    """The mel layers computed in numpy (MelFrontEnd) and the graph cut after them give the scores of the model
    file's whole, unmodified graph on real windows (44.1 kHz petrels, 48 kHz-resampled great tits)."""
    from ai_edge_litert.interpreter import Interpreter

    from rl_core.audio import iter_windows
    from rl_core.birdnet_litert import MODEL_FILE, BirdNETLiteRT, birdnet_dir, sigmoid

    model = BirdNETLiteRT(num_threads=1, workers=1)
    whole = Interpreter(model_path=str(birdnet_dir() / MODEL_FILE), num_threads=1)
    whole.allocate_tensors()
    windows = np.stack([w for path in (storm_petrels[0], great_tits[0].path)
                        for _, w in iter_windows(path, 48000, 3.0, resampling="fft")])
    embeddings, scores = model.embed_and_score(windows)
    assert embeddings.shape == (len(windows), 1024) and scores.shape == (len(windows), 6522)
    for i, window in enumerate(windows):
        whole.set_tensor(whole.get_input_details()[0]["index"], window[None, :])
        whole.invoke()
        expected = sigmoid(whole.get_tensor(whole.get_output_details()[0]["index"])[0])
        np.testing.assert_allclose(scores[i], expected, rtol=0, atol=1e-5)
    assert scores.max() > 0.5  # real calls, not silence
