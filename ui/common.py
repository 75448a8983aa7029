"""Helpers shared by the tabs: app settings and limits, error messages, output folders, model choices.

Nothing here does model maths; the tabs call rl_core for that. Models always come from
``rl_core.cache.get_model`` (one process-wide cache), never from ``gr.State``, which Gradio deep-copies per
session.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from rl_core.errors import RLCoreError

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parent.parent
ASSETS_DIR = REPO_DIR / "assets"
EXAMPLES_DIR = ASSETS_DIR / "examples"
DEFAULT_MODEL = "birdnet_v2_4"


@dataclass
class Settings:
    """What app.py's flags decide; read by the handlers at call time."""

    device: str = "cpu"
    #: largest single upload, enforced by Gradio (browser, client and server) and re-checked here
    max_file_size_mb: float = 400.0
    #: most recordings one embedding-map request may hold (after unzipping)
    max_files: int = 500
    #: largest total size of the recordings in one request, after unzipping (zip-bomb guard)
    max_total_mb: float = 2000.0
    #: per recording: longest duration analysed and most analysis windows (rl_core.inference.AnalysisLimits)
    max_duration_s: float = 4 * 3600.0
    max_windows: int = 20_000


SETTINGS = Settings()


def configure(**values: Any) -> Settings:
    """Change the settings (app.py, tests). Unknown names are errors."""
    for key, value in values.items():
        if not hasattr(SETTINGS, key):
            raise TypeError(f"unknown setting '{key}'")
        setattr(SETTINGS, key, value)
    return SETTINGS


def analysis_limits():
    """The per-recording limits of this server, for ``rl_core.inference.analyse_recording``."""
    from rl_core.inference import AnalysisLimits

    return AnalysisLimits(max_duration_s=SETTINGS.max_duration_s, max_windows=SETTINGS.max_windows)


def model_concurrency_id() -> str:
    """Every model event uses this id, so they share one slot per device (one model run at a time)."""
    return f"model-{SETTINGS.device}"


class UserFacingError(RLCoreError):
    """Bad input to the web app (too many files, unsafe zip ...): shown as a message, never a traceback."""


def describe_error(exc: BaseException, what: str | None = None) -> str:
    """One readable sentence for the user; unexpected errors are logged with their traceback."""
    text = str(exc)
    prefix = f"{what}: " if what and what not in text else ""
    if isinstance(exc, RLCoreError):
        return prefix + str(exc)
    log.exception("unexpected error%s", f" ({what})" if what else "")
    return f"{prefix}unexpected {type(exc).__name__}: {exc}"


def display_name(path: str | os.PathLike) -> str:
    """The name the user knows a file by (Gradio keeps the original name inside its upload folder)."""
    return Path(path).name


# --------------------------------------------------------------------------- output folders
_OUTPUT_ROOT = Path(tempfile.gettempdir()) / "rl_app_outputs"
_OUTPUT_MAX_AGE_S = 6 * 3600
_cleanup_lock = threading.Lock()


def new_output_dir(kind: str) -> Path:
    """A fresh folder for one request's downloads; folders older than a few hours are removed."""
    _OUTPUT_ROOT.mkdir(parents=True, exist_ok=True)
    with _cleanup_lock:
        now = time.time()
        for old in _OUTPUT_ROOT.iterdir():
            try:
                if now - old.stat().st_mtime > _OUTPUT_MAX_AGE_S:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:
                pass
    folder = _OUTPUT_ROOT / f"{kind}-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    return folder


def check_file_size(path: str | os.PathLike) -> None:
    """Refuse a file above --max-file-size (Gradio enforces it for uploads; this covers every other path)."""
    size_mb = Path(path).stat().st_size / 1e6
    if size_mb > SETTINGS.max_file_size_mb:
        raise UserFacingError(
            f"{display_name(path)} is {size_mb:.1f} MB, above this server's limit of "
            f"{SETTINGS.max_file_size_mb:g} MB; split it, or start the app with a higher limit "
            f"(python app.py --max-file-size 1GB)"
        )


# --------------------------------------------------------------------------- models
@lru_cache(maxsize=1)
def is_offline() -> bool:
    """True when model hubs cannot be reached (HF_HUB_OFFLINE, or no route to huggingface.co)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0"):
        return True
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=1.0):
            return False
    except OSError:
        return True


def model_infos() -> dict[str, dict[str, Any]]:
    from rl_core.catalog import list_models

    return list_models(print_table=False)


def weights_present(info: dict[str, Any]) -> bool:
    from rl_core.catalog import WEIGHTS_PRESENT

    return info["weights"] == WEIGHTS_PRESENT


def model_choices(need_classifier: bool = False) -> list[tuple[str, str]]:
    """(label, registry key) pairs for a model dropdown: usable models first, each labelled with its state."""
    rows = []
    for name, info in model_infos().items():
        if need_classifier and not info["has_trained_classifier"]:
            continue
        if weights_present(info):
            state = "ready"
        elif info["random_weights"] or not info["checkpoint_path"]:
            state = "random weights"
        else:
            state = "unavailable offline" if is_offline() else "downloads on first use"
        rows.append((0 if state == "ready" else 1, name, f"{name} · {info['family']} · {state}"))
    rows.sort()
    return [(label, name) for _, name, label in rows]


def default_model(need_classifier: bool = False) -> str | None:
    """BirdNET when its weights are here, else the first model with weights present, else the first one."""
    infos = model_infos()
    if DEFAULT_MODEL in infos and weights_present(infos[DEFAULT_MODEL]):
        return DEFAULT_MODEL
    choices = model_choices(need_classifier)
    return choices[0][1] if choices else None


def get_model(name: str, **kwargs: Any):
    """The cached model on the configured device (rl_core.cache keeps one copy per process)."""
    from rl_core.cache import get_model as cached

    if not name:
        raise UserFacingError("choose a model first")
    return cached(name, device=SETTINGS.device, **kwargs)


def example_recordings() -> list[Path]:
    """The bundled example recordings in assets/examples (see assets/LICENSES.md)."""
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in {".wav", ".flac", ".ogg", ".mp3"})


ProgressFn = Callable[[float, str], None]


def progress_adapter(progress: Any) -> ProgressFn:
    """Turn a gr.Progress (or None, or a plain callable) into rl_core's ``progress(fraction, message)``."""
    if progress is None:
        return lambda fraction, message: None

    def report(fraction: float, message: str = "") -> None:
        try:
            progress(min(max(float(fraction), 0.0), 1.0), desc=message)
        except TypeError:  # a plain callable(fraction, message)
            progress(fraction, message)

    return report
