"""Two registries: model entries (official YAMLs + user-registered specs) and model classes (plugins).

Official YAMLs under ``rl_core/official_models/`` are read lazily, once, under a lock. Architectures register
themselves with :func:`register_model_class` when ``rl_core.models`` is imported.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path

from rl_core.configs import ModelEntry, ModelSpec, load_model_entry_yaml, suggest
from rl_core.errors import ConfigError, UnknownModelError

log = logging.getLogger(__name__)

OFFICIAL_MODELS_DIR = Path(__file__).parent / "official_models"

_lock = threading.RLock()
_entries: dict[str, ModelEntry] = {}
_official_loaded = False
_model_classes: dict[str, type] = {}


def _ensure_official_loaded() -> None:
    global _official_loaded
    if _official_loaded:
        return
    with _lock:
        if _official_loaded:
            return
        for path in sorted(OFFICIAL_MODELS_DIR.glob("*.yml")):
            # setdefault: a user registration made earlier under the same key wins
            _entries.setdefault(path.stem, load_model_entry_yaml(path))
        _official_loaded = True


def _ensure_classes_loaded() -> None:
    # Importing the package registers every built-in architecture.
    importlib.import_module("rl_core.models")


# --------------------------------------------------------------------------- model entries (specs)
def register_model(name: str, spec: ModelSpec | ModelEntry, overwrite: bool = True) -> ModelEntry:
    """Register a model configuration under ``name`` (a ModelSpec, or a full ModelEntry)."""
    if not isinstance(name, str) or not name:
        raise ConfigError("register_model needs a non-empty name")
    entry = spec if isinstance(spec, ModelEntry) else ModelEntry(model_spec=spec)
    if not isinstance(entry.model_spec, ModelSpec):
        raise ConfigError(f"register_model expects a ModelSpec, got {type(spec).__name__}")
    _ensure_official_loaded()
    with _lock:
        if not overwrite and name in _entries:
            raise ConfigError(f"a model named '{name}' is already registered")
        _entries[name] = entry
    return entry


def unregister_model(name: str) -> None:
    _ensure_official_loaded()
    with _lock:
        _entries.pop(name, None)


def get_model_entry(name: str) -> ModelEntry:
    """The registered entry, or :class:`UnknownModelError` listing close names."""
    _ensure_official_loaded()
    with _lock:
        entry = _entries.get(name)
        known = sorted(_entries)
    if entry is None:
        raise UnknownModelError(
            f"unknown model '{name}'.{suggest(name, known)} Run `python -m rl_core list-models` to see all "
            f"{len(known)} registered models."
        )
    return entry


def get_model_spec(name: str) -> ModelSpec | None:
    """The ModelSpec registered under ``name``, or None (the framework's contract)."""
    try:
        return get_model_entry(name).model_spec
    except UnknownModelError:
        return None


def registered_models() -> dict[str, ModelEntry]:
    _ensure_official_loaded()
    with _lock:
        return dict(sorted(_entries.items()))


# --------------------------------------------------------------------------- model classes (plugins)
def register_model_class(cls: type) -> type:
    """Class decorator: make a ModelBase subclass buildable by ``ModelSpec(name=cls.name)``."""
    from rl_core.models.base import ModelBase

    if not isinstance(cls, type) or not issubclass(cls, ModelBase):
        raise ConfigError(f"register_model_class expects a ModelBase subclass, got {cls!r}")
    if not cls.name:
        raise ConfigError(f"{cls.__name__} needs a class attribute 'name' to be registered")
    with _lock:
        _model_classes[cls.name] = cls
    return cls


def get_model_class(name: str) -> type:
    _ensure_classes_loaded()
    with _lock:
        cls = _model_classes.get(name)
        known = sorted(_model_classes)
    if cls is None:
        raise UnknownModelError(f"unknown model class '{name}'.{suggest(name, known)} Known classes: {', '.join(known)}")
    return cls


def list_model_classes(builtin: bool = False) -> list[str]:
    """Names of the registered model classes; ``builtin=True``: only the families shipped in ``rl_core.models``
    (not plugins registered by user code)."""
    _ensure_classes_loaded()
    with _lock:
        classes = dict(_model_classes)
    return sorted(name for name, cls in classes.items() if not builtin or cls.__module__.startswith("rl_core.models."))
