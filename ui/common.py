"""Helpers shared by the tabs: app settings and limits, error messages, output folders, model choices.

Nothing here does model maths; the tabs call rl_core for that. Models always come from
``rl_core.cache.get_model`` (one process-wide cache), never from ``gr.State``, which Gradio deep-copies per
session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

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
    #: disk that the output folders (downloads, unpacked zips) may use together; the oldest go first
    max_output_mb: float = 5000.0
    #: model requests handled at once; each model still runs as many calls as it allows (model_slot)
    model_workers: int = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
                             (os.cpu_count() or 1))


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
    """Every model event uses this id: together they handle at most ``model_workers`` requests at once, and
    ``model_slot`` decides which model runs may overlap."""
    return f"model-{SETTINGS.device}"


class UserFacingError(RLCoreError):
    """Bad input to the web app (too many files, unsafe zip ...): shown as a message, never a traceback."""


class RequestCancelled(UserFacingError):
    """The client that asked for this work has gone; the work stops at its next progress report."""


def client_disconnected() -> bool:
    """True inside a queued Gradio event whose client has disconnected (closed tab, dropped connection).

    Gradio 6 marks such an event not ``alive`` but lets its handler run on; it offers no public hook, so this
    reads the queue's record of the running event (tests/test_hardening_app.py checks it still works)."""
    from gradio.context import LocalContext

    blocks = LocalContext.blocks.get(None)
    event_id = LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or not event_id:
        return False
    for job in list(getattr(queue, "active_jobs", [])):
        for event in job or ():
            if getattr(event, "_id", None) == event_id:
                return not getattr(event, "alive", True)
    return False


def stop_if_client_gone() -> None:
    if client_disconnected():
        log.info("the client of this request disconnected: its work stops here")
        raise RequestCancelled("stopped: the client disconnected")


_slot_lock = threading.Lock()
_slots: dict[Any, threading.Semaphore] = {}


@contextlib.contextmanager
def model_slot(model: Any) -> Iterator[None]:
    """Hold a turn to run ``model``: torch models run one at a time per device, while a model that serves
    several calls at once (``max_concurrent_calls``, e.g. BirdNET with one interpreter per core) gets that many
    turns. While waiting, a request whose client has gone gives up."""
    calls = max(1, int(model.max_concurrent_calls))  # declared on ModelBase
    key = ("model", id(model)) if calls > 1 else ("device", str(model.device))
    with _slot_lock:
        slot = _slots.setdefault(key, threading.Semaphore(calls))
    while not slot.acquire(timeout=0.5):
        stop_if_client_gone()
    try:
        yield
    finally:
        slot.release()


def hide_server_paths(text: str) -> str:
    """``text`` with every path inside the server's folders (Gradio's uploads, the output folders, the temporary
    folder, the app's own folder, the home folder) shortened to its last part: the name the user knows."""
    roots = {tempfile.gettempdir(), os.environ.get("GRADIO_TEMP_DIR", ""), str(REPO_DIR), os.path.expanduser("~")}
    roots = sorted((r.rstrip("/") for r in roots if r and r.rstrip("/")), key=len, reverse=True)
    pattern = "(?:" + "|".join(re.escape(r) for r in roots) + r")(?:/[^\s'\"/]*)*"
    return re.sub(pattern, lambda m: Path(m.group()).name, text)


def describe_error(exc: BaseException, what: str | None = None) -> str:
    """One readable sentence for the user, without server paths; unexpected errors are logged with their
    traceback."""
    text = str(exc)
    prefix = f"{what}: " if what and what not in text else ""
    if isinstance(exc, RLCoreError):
        return hide_server_paths(prefix + text)
    log.exception("unexpected error%s", f" ({what})" if what else "")
    return hide_server_paths(f"{prefix}unexpected {type(exc).__name__}: {exc}")


def display_name(path: str | os.PathLike) -> str:
    """The name the user knows a file by (Gradio keeps the original name inside its upload folder)."""
    return Path(path).name


# --------------------------------------------------------------------------- output folders
_OUTPUT_ROOT = Path(tempfile.gettempdir()) / "rl_app_outputs"
_OUTPUT_MAX_AGE_S = 6 * 3600
#: a folder this young may still be being served (Gradio copies a response's files into its cache right after the
#: handler returns). Folders used for longer (a kept inference run's, a long export) are held (``hold_output_dir``);
#: a longer grace let a busy server keep far more than ``--max-output-size`` (200 MB against 20 in bench/soak_app)
_OUTPUT_GRACE_S = 30
_cleanup_lock = threading.Lock()
_folders_in_use: set[Path] = set()
#: bytes of each output folder past its grace time, by the folder's mtime: walking every folder on every request
#: cost 0.1 ms per folder (0.2 s per request with the 1,700 folders of a busy day). Files are added by atomic
#: rename or created anew, which changes the folder's mtime and so measures it again.
_folder_sizes: dict[Path, tuple[int, int]] = {}
#: the clean-up runs at most this often, or after this many new folders (it stats every folder: 50 ms with 2,000 of
#: them, on a loaded machine)
_CLEAN_EVERY_S = 10.0
_CLEAN_EVERY_FOLDERS = 8
_last_clean = 0.0
_new_since_clean = 0


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (files removed meanwhile count as 0)."""
    total = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed meanwhile
                pass
    return total


def _clean_outputs(now: float) -> None:
    """Remove folders older than a few hours, then the oldest until all fit in ``max_output_mb``
    (folders of running requests and very young ones stay)."""
    folders = []
    for folder in _OUTPUT_ROOT.iterdir():
        try:
            folders.append((folder.stat().st_mtime_ns, folder))
        except FileNotFoundError:
            pass
    folders.sort()
    kept = []
    for mtime_ns, folder in folders:
        age_s = now - mtime_ns / 1e9
        if folder in _folders_in_use:
            kept.append((folder, folder_bytes(folder), False))
        elif age_s > _OUTPUT_MAX_AGE_S:
            shutil.rmtree(folder, ignore_errors=True)
        elif age_s <= _OUTPUT_GRACE_S:  # may still be written to: measured every time
            kept.append((folder, folder_bytes(folder), False))
        else:
            known = _folder_sizes.get(folder)
            if known is None or known[0] != mtime_ns:
                known = _folder_sizes[folder] = (mtime_ns, folder_bytes(folder))
            kept.append((folder, known[1], True))
    for gone in _folder_sizes.keys() - {folder for folder, _, _ in kept}:
        del _folder_sizes[gone]
    total = sum(size for _, size, _ in kept)
    limit = SETTINGS.max_output_mb * 1e6
    for folder, size, removable in kept:  # oldest first
        if total <= limit:
            break
        if removable:
            shutil.rmtree(folder, ignore_errors=True)
            _folder_sizes.pop(folder, None)
            total -= size
            log.info("removed output folder %s (%.0f MB) to stay under --max-output-size", folder.name, size / 1e6)


def new_output_dir(kind: str) -> Path:
    """A fresh folder for one request's downloads; old folders are removed first (by age, then by total size)."""
    global _last_clean, _new_since_clean
    _OUTPUT_ROOT.mkdir(parents=True, exist_ok=True)
    with _cleanup_lock:
        now = time.time()
        _new_since_clean += 1
        if now - _last_clean >= _CLEAN_EVERY_S or _new_since_clean >= _CLEAN_EVERY_FOLDERS:
            _clean_outputs(now)
            _last_clean, _new_since_clean = now, 0
    folder = _OUTPUT_ROOT / f"{kind}-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    return folder


def hold_output_dir(folder: Path) -> None:
    """Keep ``folder`` through every clean-up until :func:`release_output_dir` (it still counts towards the bound)."""
    with _cleanup_lock:
        _folders_in_use.add(folder)


def release_output_dir(folder: Path) -> None:
    """Let the clean-up remove ``folder`` again, after a grace period from now (its files may be being served)."""
    with _cleanup_lock:
        _folders_in_use.discard(folder)
    with contextlib.suppress(OSError):
        os.utime(folder)


@contextlib.contextmanager
def held_output_dir(kind: str) -> Iterator[Path]:
    """A new output folder held while the block runs (long exports and unpacking), released when it ends."""
    folder = new_output_dir(kind)
    hold_output_dir(folder)
    try:
        yield folder
    finally:
        release_output_dir(folder)


@contextlib.contextmanager
def request_scratch_dir(kind: str) -> Iterator[Path]:
    """A folder for one request's intermediate files (unpacked zips), removed when the request ends, whether it
    succeeds or fails; it counts towards ``max_output_mb`` meanwhile."""
    folder = new_output_dir(f"scratch-{kind}")
    with _cleanup_lock:
        _folders_in_use.add(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with _cleanup_lock:
            _folders_in_use.discard(folder)


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
def model_infos() -> dict[str, dict[str, Any]]:
    from rl_core.catalog import list_models

    return list_models(print_table=False)


def model_state(name: str, info: dict[str, Any]) -> str:
    """What a model gives here, in words: species names / embeddings only, ready / needs a download."""
    from rl_core.catalog import weights_status
    from rl_core.checkpoints import source_reachable

    gives = "species names" if info["has_trained_classifier"] else "embeddings only (no species names)"
    status = weights_status(name)
    if status.present:
        return f"{gives} · ready"
    if status.state in ("random", "missing"):
        return f"{gives} · no trained weights here"
    return f"{gives} · needs a download" + ("" if source_reachable(status.url) else " (not possible offline)")


def model_choices(need_classifier: bool = False) -> list[tuple[str, str]]:
    """(label, registry key) pairs for a model dropdown: the default model, then ready models with species names
    first, each labelled with what it gives here (``model_state``)."""
    from rl_core.catalog import weights_status

    rows = []
    for name, info in model_infos().items():
        if need_classifier and not info["has_trained_classifier"]:
            continue
        ready, names = weights_status(name).present, info["has_trained_classifier"]
        rows.append((name != DEFAULT_MODEL, not ready, not names, name, f"{name} · {model_state(name, info)}"))
    rows.sort()
    return [(label, name) for *_, name, label in rows]


def default_model(need_classifier: bool = False) -> str | None:
    """BirdNET when its weights are here, else the first model with weights present, else the first one."""
    from rl_core.catalog import weights_status

    if DEFAULT_MODEL in model_infos() and weights_status(DEFAULT_MODEL).present:
        return DEFAULT_MODEL
    choices = model_choices(need_classifier)
    return choices[0][1] if choices else None


def model_validator(model_position: int) -> Callable[..., list[dict[str, Any]]]:
    """A Gradio ``validator=`` for a model event, run before the request is queued: an unknown model, or one whose
    weights are absent and cannot be downloaded now (rl_core.catalog.require_weights), is refused in
    milliseconds instead of waiting for, then holding, the shared model slot. An empty choice is left to the
    handler (which may pick the default model)."""
    import gradio as gr

    from rl_core.catalog import require_weights

    def validate(*inputs: Any) -> list[dict[str, Any]]:
        verdicts = [gr.validate(True, "") for _ in inputs]
        if inputs[model_position]:
            try:
                require_weights(inputs[model_position])
            except RLCoreError as exc:
                verdicts[model_position] = gr.validate(False, str(exc))
        return verdicts

    return validate


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
        stop_if_client_gone()  # long work reports progress often: the place to notice a client that left
        try:
            progress(min(max(float(fraction), 0.0), 1.0), desc=message)
        except TypeError:  # a plain callable(fraction, message)
            progress(fraction, message)

    return report
