"""rl_core: the model API of the representation-learning framework, without any UI."""

import importlib

#: public name -> the module that defines it, imported on first use (PEP 562): ``import rl_core.project`` or
#: ``rl_core.audio`` must not pull in torch, so that a BirdNET worker process runs without it
_EXPORTS = {
    "describe_model": "rl_core.catalog",
    "list_models": "rl_core.catalog",
    "AudioConfig": "rl_core.configs",
    "ModelSpec": "rl_core.configs",
    "ProbeConfig": "rl_core.configs",
    "build_model": "rl_core.loading",
    "build_model_from_spec": "rl_core.loading",
    "get_checkpoint_path": "rl_core.loading",
    "list_model_layers": "rl_core.loading",
    "load_class_mapping": "rl_core.loading",
    "load_model": "rl_core.loading",
    "ModelBase": "rl_core.models.base",
    "get_model_class": "rl_core.registry",
    "get_model_spec": "rl_core.registry",
    "list_model_classes": "rl_core.registry",
    "register_model": "rl_core.registry",
    "register_model_class": "rl_core.registry",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rl_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0"


def build_probe_from_config_online(*args, **kwargs):
    """Train-through-the-backbone probe; see :mod:`rl_core.probes`."""
    from rl_core.probes import build_probe_from_config_online as impl

    return impl(*args, **kwargs)


def build_probe_from_config_offline(*args, **kwargs):
    """Probe on stored embeddings; see :mod:`rl_core.probes`."""
    from rl_core.probes import build_probe_from_config_offline as impl

    return impl(*args, **kwargs)


__all__ = [
    "AudioConfig",
    "ModelBase",
    "ModelSpec",
    "ProbeConfig",
    "__version__",
    "build_model",
    "build_model_from_spec",
    "build_probe_from_config_offline",
    "build_probe_from_config_online",
    "describe_model",
    "get_checkpoint_path",
    "get_model_class",
    "get_model_spec",
    "list_model_classes",
    "list_model_layers",
    "list_models",
    "load_class_mapping",
    "load_model",
    "register_model",
    "register_model_class",
]
