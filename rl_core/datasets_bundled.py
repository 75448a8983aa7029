"""Locate the real recordings shipped inside data-only wheels (pykanto, vocalpy) without importing them.

These packages are installed with ``--no-deps`` purely for their files; importing them would pull in their
dependencies, so we only look up where they are installed.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from rl_core.errors import MissingDependencyError


def package_dir(package: str) -> Path | None:
    """Installed folder of ``package`` (found via its spec, never imported), or None."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _require(package: str) -> Path:
    found = package_dir(package)
    if found is None:
        raise MissingDependencyError(
            f"the '{package}' package (example recordings) is not installed: "
            f"pip install --no-deps -r requirements-data.txt"
        )
    return found


@dataclass(frozen=True)
class LabelledRecording:
    path: Path
    label: str
    species: str


def great_tit_songs() -> list[LabelledRecording]:
    """The 20 pykanto great-tit songs, labelled by individual (two birds: B32 and SW83)."""
    root = _require("pykanto") / "data" / "segmented" / "great_tit"
    items = []
    for wav in sorted((root / "WAV").glob("*.wav")):
        meta = json.loads((root / "JSON" / f"{wav.stem}.JSON").read_text())
        individual = str(meta.get("ID") or wav.stem.split("-")[1])
        items.append(LabelledRecording(wav, individual, "Parus major"))
    return items


def storm_petrel_recordings() -> list[Path]:
    """The two xeno-canto European Storm-Petrel recordings in pykanto."""
    return sorted((_require("pykanto") / "data" / "raw" / "STORM-PETREL").glob("*.wav"))


def pykanto_dir() -> Path:
    return _require("pykanto") / "data"


def vocalpy_examples_dir() -> Path:
    return _require("vocalpy") / "examples"
