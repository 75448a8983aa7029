"""The example YAMLs in examples/ follow the train/evaluate schemas (and so does every key the docs show)."""

from __future__ import annotations

from pathlib import Path

from rl_core.evaluation.config import EvaluateRunConfig, TrainRunConfig, load_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_example_configs_validate():
    train = load_config(EXAMPLES / "train_probe.yml", TrainRunConfig)
    assert train.model == "birdnet_v2_4" and train.dataset.kind == "bundled" and train.probe.probe_type == "linear"
    ds = train.dataset.load(EXAMPLES)
    assert len(ds) == 20 and ds.classes == ["B32", "SW83"]
    evaluate = load_config(EXAMPLES / "evaluate.yml", EvaluateRunConfig)
    assert evaluate.models == "available" and evaluate.benchmarks == ["great_tit_individuals", "multi_taxon"]
