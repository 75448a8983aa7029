"""YAML schemas of ``python -m rl_core train --config EXP.yml`` and ``evaluate --config EVAL.yml``.

Every section forbids unknown keys, so a typo is an error naming the key (with close matches). The documented
examples are ``examples/train_probe.yml`` and ``examples/evaluate.yml``; docs/evaluation.md explains each key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rl_core.configs import ProbeConfig, read_yaml, suggest
from rl_core.errors import ConfigError
from rl_core.evaluation.datasets import (
    AudioDataset,
    beans_dataset,
    birdset_dataset,
    csv_dataset,
    folder_dataset,
    windowed,
)
from rl_core.evaluation.training import TrainingConfig


class DatasetSpec(BaseModel):
    """Where the labelled clips come from."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["folder", "csv", "beans", "birdset", "bundled"]
    path: str | None = Field(None, description="folder / CSV file / BEANS checkout / BirdSet export root")
    name: str | None = None
    subset: str | None = Field(None, description="BEANS dataset, BirdSet code or bundled benchmark name")
    audio_root: str | None = Field(None, description="CSV only: folder the 'file' column is relative to")
    label_separator: str | None = Field(None, description="CSV only: separator of several labels (multi-label)")
    classes: list[str] | None = Field(None, description="the allowed labels; any other label is an error")
    window_s: float | None = Field(None, gt=0, description="cut clips into windows of this length")
    hop_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "DatasetSpec":
        if self.kind != "bundled" and not self.path:
            raise ValueError(f"dataset kind '{self.kind}' needs 'path'")
        if self.kind in ("beans", "birdset", "bundled") and not self.subset:
            raise ValueError(f"dataset kind '{self.kind}' needs 'subset'")
        if self.kind != "csv" and (self.audio_root or self.label_separator):
            raise ValueError("audio_root and label_separator apply to kind 'csv' only")
        return self

    def load(self, base: Path | None = None) -> AudioDataset:
        """Build the dataset; relative paths are taken from ``base`` (the YAML's folder)."""
        def resolve(p: str | None) -> Path | None:
            if p is None:
                return None
            path = Path(p).expanduser()
            return path if path.is_absolute() or base is None else base / path

        if self.kind == "folder":
            ds = folder_dataset(resolve(self.path), self.name, self.classes)
        elif self.kind == "csv":
            ds = csv_dataset(resolve(self.path), resolve(self.audio_root), self.label_separator, self.name, self.classes)
        elif self.kind == "beans":
            ds = beans_dataset(resolve(self.path), self.subset)
        elif self.kind == "birdset":
            ds = birdset_dataset(resolve(self.path), self.subset)
        else:
            from rl_core.evaluation.runner import get_benchmark

            ds = get_benchmark(self.subset).load()
        if self.window_s:
            ds = windowed(ds, self.window_s, self.hop_s)
        return ds


class TrainRunConfig(BaseModel):
    """``train``: fit one probe on a dataset's training split and test it on its test split."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="registry key or path of a model YAML")
    checkpoint_path: str | None = None
    dataset: DatasetSpec
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    test_fraction: float = Field(0.2, gt=0, lt=1, description="used when the dataset has no 'split' column")
    cache_dir: str | None = None
    output_dir: str = "runs/probe"
    device: str = "cpu"


class EvaluateRunConfig(BaseModel):
    """``evaluate``: the benchmark protocol (cross-validated probe, retrieval, clustering) for several models."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] | Literal["available"] = Field(
        default_factory=lambda: ["birdnet_v2_4"], description="registry keys, or 'available' (weights present)")
    random_init: list[str] = Field(default_factory=list,
                                   description="architectures also run with seeded random weights (labelled baselines)")
    benchmarks: list[str] = Field(default_factory=lambda: ["great_tit_individuals", "multi_taxon"])
    datasets: list[DatasetSpec] = Field(default_factory=list, description="custom datasets, evaluated like benchmarks")
    folds: int = Field(5, ge=2, description="cross-validation folds for custom datasets")
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    seeds: list[int] = Field(default_factory=lambda: [0])
    cache_dir: str | None = None
    write_leaderboard: bool = True
    leaderboard_dir: str | None = None
    results_csv: str | None = Field(None, description="also write the rows of this run to this CSV")


Cfg = TypeVar("Cfg", bound=BaseModel)


def _explain(err: ValidationError, where: str, cls: type[BaseModel]) -> str:
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            parent: Any = cls
            for key in item["loc"][:-1]:
                field = getattr(parent, "model_fields", {}).get(key)
                parent = field.annotation if field is not None else None
            known = list(getattr(parent, "model_fields", {}) or [])
            parts.append(f"unknown key '{loc}'.{suggest(str(item['loc'][-1]), known)}")
        elif item["type"] == "missing":
            parts.append(f"missing key '{loc}'")
        else:
            parts.append(f"'{loc}': {item['msg']}")
    return f"{where}: " + "; ".join(parts)


def parse_config(data: Any, cls: type[Cfg], where: str) -> Cfg:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_explain(err, where, cls)) from None


def load_config(path: str | Path, cls: type[Cfg]) -> Cfg:
    """Read and validate a YAML config (``yaml.safe_load``); errors name the file and the key."""
    return parse_config(read_yaml(path, "config file"), cls, str(path))
