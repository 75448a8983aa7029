"""A classifier saved by the Find & train tab, applied in the inference tab (no Gradio here).

The same library path as ``rl-core predict --classifier``: ``rl_core.custom_classifier.load_for_backbone`` refuses
a classifier of another backbone before the model pass, ``classifier_result`` scores each file's window
embeddings, and its rows (marked "your classifier: NAME") join the species table, the timeline and the exports.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ui.common import UserFacingError, display_name, request_scratch_dir

WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIXES = (".yaml", ".yml")
#: what to upload, said in every refusal
BOTH_FILES = "add both files of your classifier, NAME.safetensors and its card NAME.yaml, as Find & train saved them"


@dataclass(frozen=True)
class LoadedClassifier:
    """A checked classifier and the name it is shown under (its file's stem)."""

    classifier: Any  # rl_core.custom_classifier.CustomClassifier
    name: str

    @property
    def classes(self) -> list[str]:
        return self.classifier.classes


def _paths(files: Any) -> list[Path]:
    """Gradio's paths, or gradio_client's FileData dicts, as paths."""
    items = files if isinstance(files, (list, tuple)) else [files]
    return [Path(f.get("path") if isinstance(f, dict) else f) for f in items if f]


def classifier_from_uploads(files: Any, model_name: str) -> LoadedClassifier | None:
    """The uploaded classifier checked against ``model_name`` (None when nothing was uploaded).

    Each upload sits in its own folder, so the two files are put side by side under one name before loading.
    """
    from rl_core.custom_classifier import load_for_backbone

    paths = _paths(files)
    if not paths:
        return None
    other = [display_name(p) for p in paths if p.suffix.lower() not in (WEIGHTS_SUFFIX, *CARD_SUFFIXES)]
    if other:
        raise UserFacingError(f"{', '.join(other)} is not a classifier file: {BOTH_FILES}")
    weights = [p for p in paths if p.suffix.lower() == WEIGHTS_SUFFIX]
    cards = [p for p in paths if p.suffix.lower() in CARD_SUFFIXES]
    if len(weights) != 1 or len(cards) != 1:
        raise UserFacingError(f"{BOTH_FILES} (got {len(weights)} .safetensors and {len(cards)} .yaml)")
    name = Path(display_name(weights[0])).stem
    with request_scratch_dir("classifier") as folder:
        shutil.copyfile(weights[0], folder / f"{name}{WEIGHTS_SUFFIX}")
        shutil.copyfile(cards[0], folder / f"{name}.yaml")
        classifier = load_for_backbone(folder / f"{name}{WEIGHTS_SUFFIX}", model_name)
    return LoadedClassifier(classifier, name)


def score_files(loaded: LoadedClassifier | None, results: dict[str, Any]) -> dict[str, Any]:
    """Each file's windows scored by the classifier (``RecordingResult``s of its classes); {} without one."""
    from rl_core.custom_classifier import classifier_result

    if loaded is None:
        return {}
    return {name: classifier_result(loaded.classifier, result, loaded.name) for name, result in results.items()}
