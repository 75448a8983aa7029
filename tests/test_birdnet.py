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
    assert "CC BY-NC-SA 4.0" in capsys.readouterr().out


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
