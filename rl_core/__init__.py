"""rl_core: the model API of the representation-learning framework, without any UI."""

from rl_core.catalog import describe_model, list_models
from rl_core.configs import AudioConfig, ModelSpec, ProbeConfig
from rl_core.loading import (
    build_model,
    build_model_from_spec,
    get_checkpoint_path,
    list_model_layers,
    load_class_mapping,
    load_model,
)
from rl_core.models.base import ModelBase
from rl_core.registry import (
    get_model_class,
    get_model_spec,
    list_model_classes,
    register_model,
    register_model_class,
)

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
