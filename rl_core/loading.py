"""Build and load models: build_model, build_model_from_spec, load_model and their helpers.

Semantics follow the framework README:
  * checkpoint priority: explicit ``checkpoint_path`` > YAML default (only when ``num_classes`` is None) > none;
  * ``num_classes=None`` + checkpoint: class count read from the checkpoint, classifier weights kept;
    ``num_classes=None`` without checkpoint: embedding model, no head; explicit ``num_classes``: new random
    head, the checkpoint's classifier weights are not loaded;
  * a checkpoint switches ``pretrained`` off.
Specs are frozen pydantic models, so loading never mutates them.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

import torch

from rl_core.catalog import require_weights
from rl_core.checkpoints import load_state_dict, resolve_checkpoint
from rl_core.configs import ModelEntry, ModelSpec, load_model_entry_yaml, suggest
from rl_core.errors import CheckpointError, CheckpointMismatchError, ConfigError, UnknownModelError
from rl_core.models.base import ModelBase
from rl_core.registry import get_model_class, get_model_entry

log = logging.getLogger(__name__)

#: the arguments every family passes on to ModelBase.__init__ through ``**kwargs``
_BASE_ARGS = set(inspect.signature(ModelBase.__init__).parameters) - {"self"}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The one device rule: ``None``/"auto" -> cuda if available, else mps, else cpu; anything else as given."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def model_device(model: str | Path | ModelSpec | ModelEntry, device: str | torch.device | None = None) -> torch.device:
    """Where ``load_model(model, device)`` puts the model: ``device``, else the spec's (default "auto"), resolved
    by :func:`resolve_device`. ``rl_core.cache.get_model`` keys its entries by the same rule."""
    if device is None:
        device = _resolve_entry(model)[1].model_spec.device
    return resolve_device(device)


def _class_kwargs(cls: type, kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """Keep kwargs the constructor accepts; unknown ones are an error naming them (never dropped)."""
    params = inspect.signature(cls.__init__).parameters
    accepts_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {n for n, p in params.items() if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)} - {"self"}
    if accepts_var_kw:
        # The class forwards **kwargs to ModelBase, which takes only the base arguments.
        named |= _BASE_ARGS
    unknown = sorted(set(kwargs) - named)
    if unknown:
        hints = "".join(suggest(k, sorted(named)) for k in unknown)
        raise ConfigError(
            f"{where}: unknown argument(s) {', '.join(repr(k) for k in unknown)} for model class "
            f"'{cls.name}' ({cls.__name__}).{hints} Accepted: {', '.join(sorted(named - {'device'}))}"
        )
    return kwargs


def build_model_from_spec(
    spec: ModelSpec,
    device: str | torch.device | None = None,
    num_classes: int | None = None,
    return_features_only: bool = False,
    **kwargs: Any,
) -> ModelBase:
    """Instantiate the architecture named by ``spec.name`` (random or architecture-pretrained weights)."""
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"build_model_from_spec expects a ModelSpec, got {type(spec).__name__}")
    cls = get_model_class(spec.name)
    args = {
        **spec.extra_kwargs,
        **kwargs,
        "num_classes": num_classes,
        "return_features_only": return_features_only,
        "audio_config": spec.audio_config,
        "pretrained": kwargs.pop("pretrained", spec.pretrained),
    }
    args = _class_kwargs(cls, args, f"model '{spec.name}'")
    target = resolve_device(device if device is not None else spec.device)
    try:
        model = cls(device=str(target), **args)
    except TypeError as err:
        raise ConfigError(f"could not build model class '{spec.name}': {err}") from None
    return model.move_to(target)


def class_spec(class_name: str) -> ModelSpec:
    """The spec of a bare model class: the class's own sample rate and window, not AudioConfig's 16 kHz / 10 s."""
    cls = get_model_class(class_name)  # UnknownModelError listing the classes
    return ModelSpec(name=class_name, audio_config=cls.default_audio_config())


def build_model(name: str, device: str | torch.device | None = "cpu", **kwargs: Any) -> ModelBase:
    """Build from a registered model name or a registered model class name, without loading checkpoints."""
    try:
        spec = get_model_entry(name).model_spec
    except UnknownModelError:
        spec = class_spec(name)  # raises UnknownModelError listing classes when this is no class either
    return build_model_from_spec(spec, device=device, **kwargs)


def _resolve_entry(model: str | Path | ModelSpec | ModelEntry) -> tuple[str, ModelEntry]:
    if isinstance(model, ModelEntry):
        return model.model_spec.name, model
    if isinstance(model, ModelSpec):
        return model.name, ModelEntry(model_spec=model)
    text = str(model)
    if text.endswith((".yml", ".yaml")) or Path(text).is_file():
        return Path(text).stem, load_model_entry_yaml(text)
    return text, get_model_entry(text)


def _apply_state_dict(model: ModelBase, state_dict: dict[str, torch.Tensor], keep_classifier: bool, source: str) -> None:
    state_dict = model.convert_state_dict(state_dict)
    prefix = model.classifier_prefix
    if not keep_classifier:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
    own = model.state_dict()
    if not keep_classifier:
        own = {k: v for k, v in own.items() if not k.startswith(prefix)}
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong_shape = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if tuple(own[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or wrong_shape:
        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")

        parts = []
        if wrong_shape:
            parts.append(f"shape mismatch for {show(wrong_shape)}")
        if missing:
            parts.append(f"missing keys {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {show(unexpected)}")
        raise CheckpointMismatchError(
            f"checkpoint {source} does not fit model class '{model.name}': " + "; ".join(parts)
            + ". Is it a checkpoint of another architecture or variant?"
        )
    model.load_state_dict(state_dict, strict=keep_classifier)


def load_class_mapping_file(path: str | Path, model_name: str | None = None) -> dict[str, dict[Any, Any]]:
    """Read a ``{label: index}`` JSON (or a list of labels) into both directions."""
    local = resolve_checkpoint(str(path), model_name=model_name, kind="class mapping")
    try:
        data = json.loads(Path(local).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"class mapping {path} is not valid JSON: {err}") from None
    if isinstance(data, list):
        label_to_index = {str(label): i for i, label in enumerate(data)}
    elif isinstance(data, dict):
        label_to_index = {str(label): int(index) for label, index in data.items()}
    else:
        raise ConfigError(f"class mapping {path} must be a JSON object {{label: index}} or a list of labels")
    index_to_label = {index: label for label, index in label_to_index.items()}
    if len(index_to_label) != len(label_to_index):
        raise ConfigError(f"class mapping {path} maps two labels to the same index")
    return {"label_to_index": label_to_index, "index_to_label": index_to_label}


def _class_mapping_for_head(entry: ModelEntry, name: str, num_classes: int, own_checkpoint: bool) -> dict | None:
    """The YAML's class mapping for the loaded head.

    With the YAML's own checkpoint the mapping must fit (errors propagate). With a user's checkpoint it may
    describe another head: it is attached only when it can be read and its size fits, else logged and skipped.
    """
    try:
        mapping = load_class_mapping_file(entry.class_mapping_path, model_name=name)
    except CheckpointError as err:
        if own_checkpoint:
            raise
        log.warning("not attaching the class mapping of '%s' to your checkpoint's head: %s", name, err)
        return None
    if len(mapping["label_to_index"]) != num_classes:
        if own_checkpoint:
            raise CheckpointError(
                f"class mapping of '{name}' has {len(mapping['label_to_index'])} labels but the head has "
                f"{num_classes} classes"
            )
        log.warning("class mapping of '%s' has %d labels, your checkpoint's head %d: labels not attached",
                    name, len(mapping["label_to_index"]), num_classes)
        return None
    return mapping


def load_model(
    model: str | Path | ModelSpec | ModelEntry,
    device: str | torch.device | None = None,
    num_classes: int | None = None,
    checkpoint_path: str | Path | None = None,
    return_features_only: bool = False,
    pretrained: bool | None = None,
    **kwargs: Any,
) -> ModelBase:
    """Load a model by registry name, YAML path or ModelSpec, with the framework's checkpoint rules.

    ``device=None``: the spec's device, by default "auto" (cuda, else mps, else cpu; :func:`model_device`).
    """
    name, entry = _resolve_entry(model)
    spec = entry.model_spec
    cls = get_model_class(spec.name)
    checkpoint = str(checkpoint_path) if checkpoint_path is not None else (
        entry.checkpoint_path if num_classes is None else None
    )
    state_dict = None
    head_classes = num_classes
    keep_classifier = False
    if checkpoint == entry.checkpoint_path and entry.checkpoint_path:
        require_weights(name, entry)  # absent and unreachable: one clear sentence now, not a download's retries
    if checkpoint:
        sha = entry.checkpoint_sha256 if checkpoint == entry.checkpoint_path else None
        local = resolve_checkpoint(checkpoint, model_name=name, sha256=sha)
        state_dict = load_state_dict(local)
        if num_classes is None:
            head_classes = cls.num_classes_in_state_dict(state_dict)
            keep_classifier = head_classes is not None and not return_features_only
            if return_features_only:
                head_classes = None
    build_kwargs = dict(kwargs)
    build_kwargs["pretrained"] = False if checkpoint else (spec.pretrained if pretrained is None else pretrained)
    net = build_model_from_spec(
        spec, device="cpu", num_classes=head_classes, return_features_only=return_features_only, **build_kwargs
    )
    if state_dict is not None:
        _apply_state_dict(net, state_dict, keep_classifier=keep_classifier, source=checkpoint)
    if entry.class_mapping_path and keep_classifier:  # labels describe the trained head only
        net.label_mapping = _class_mapping_for_head(entry, name, net.num_classes, own_checkpoint=checkpoint == entry.checkpoint_path)
    net = net.move_to(model_device(entry, device))
    net.eval()
    return net


def get_checkpoint_path(name: str) -> str | None:
    """The default checkpoint path from the model's YAML (None when it has none)."""
    return get_model_entry(name).checkpoint_path


def load_class_mapping(name: str) -> dict[str, dict[Any, Any]] | None:
    """``{"label_to_index": {label: i}, "index_to_label": {i: label}}`` for a registered model, or None."""
    entry = get_model_entry(name)
    cls = get_model_class(entry.model_spec.name)
    if entry.class_mapping_path:
        return load_class_mapping_file(entry.class_mapping_path, model_name=name)
    return cls.builtin_class_mapping()


def list_model_layers(name: str | ModelSpec) -> list[str]:
    """Names of the layers usable in ``extract_embeddings(layers=...)`` (built on the meta device: no weights are allocated)."""
    spec = name if isinstance(name, ModelSpec) else get_model_entry(name).model_spec
    cls = get_model_class(spec.name)
    args = _class_kwargs(cls, {**spec.extra_kwargs, "audio_config": spec.audio_config}, f"model '{spec.name}'")
    try:
        # On the meta device no memory is allocated (Bird-MAE-Huge would take 2.5 GB for a list of names).
        with torch.device("meta"):
            return cls(device="cpu", **args).list_layers()
    except Exception:  # an architecture whose constructor computes on real tensors
        return build_model_from_spec(spec, device="cpu").list_layers()

