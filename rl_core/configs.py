"""Pydantic configuration models: AudioConfig, ModelSpec, ProbeConfig and the YAML model entry.

Unknown keys are errors everywhere (``extra="forbid"``) except in :class:`ModelSpec`, whose extra keys are
architecture arguments; those are checked against the architecture's constructor when the model is built.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rl_core.errors import ConfigError


class AudioConfig(BaseModel):
    """How audio is prepared for a model (the framework's fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_rate: int = Field(16000, gt=0)
    n_fft: int = 2048
    hop_length: int = 512
    win_length: int = 2048
    window: str = "hann"
    n_mels: int = 128
    representation: Literal["mel_spectrogram", "spectrogram", "raw", "fbank"] = "raw"
    normalize: bool = True
    target_length_seconds: float = Field(10.0, gt=0)
    window_selection: Literal["random", "center", "start"] = "random"
    center: bool = True
    #: how a recording at another rate is brought to ``sample_rate``: the rule of the model's reference
    #: (``rl_core.resampling.resample``): "kaiser_best" = librosa kaiser_best with scale=True (the ESP models),
    #: "fft" = scipy's FFT resample of each window, no rescaling (the official BirdNET package),
    #: "polyphase" = scipy's resample_poly, no rescaling (BatDetect2)
    resampling: Literal["kaiser_best", "fft", "polyphase"] = "kaiser_best"


class ModelSpec(BaseModel):
    """Architecture name plus the arguments its class is built with.

    Architecture-specific arguments (``efficientnet_variant``, ``fine_tuned`` ...) are extra fields; they are
    validated against the architecture's constructor by :func:`rl_core.loading.build_model_from_spec`.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    pretrained: bool = False
    #: "auto" (cuda, else mps, else cpu: ``rl_core.loading.resolve_device``), or a torch device such as "cpu"
    device: str = "auto"
    audio_config: AudioConfig = Field(default_factory=AudioConfig)

    @property
    def extra_kwargs(self) -> dict[str, Any]:
        """Architecture arguments given beyond the common fields."""
        return dict(self.model_extra or {})


class ModelEntry(BaseModel):
    """One registered model: the parsed form of an official-model YAML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_spec: ModelSpec
    checkpoint_path: str | None = None
    class_mapping_path: str | None = None
    checkpoint_sha256: str | None = None
    description: str = ""
    family: str = ""
    license: str = "unknown"
    embedding_dim: int | None = None
    num_classes: int | None = None
    parameters: int | None = None
    checkpoint_size_mb: float | None = None
    source_url: str | None = None
    random_weights: bool = False

    @property
    def sample_rate(self) -> int:
        return self.model_spec.audio_config.sample_rate

    @property
    def window_seconds(self) -> float:
        return self.model_spec.audio_config.target_length_seconds

    @property
    def has_trained_classifier(self) -> bool:
        """A trained head ships with the weights: a checkpoint with a class mapping or a known class count,
        or weights bundled with their head (BirdNET)."""
        if self.checkpoint_path is not None:
            return self.num_classes is not None or self.class_mapping_path is not None
        return self.num_classes is not None and self.model_spec.pretrained


class ProbeConfig(BaseModel):
    """A head trained on a backbone's embeddings (the framework's fields)."""

    model_config = ConfigDict(extra="forbid")

    probe_type: Literal["linear", "mlp", "attention", "lstm", "transformer"] = "linear"
    target_layers: list[str | int] | str = Field(default_factory=lambda: ["last_layer"])
    aggregation: Literal["mean", "max", "cls_token", "none", "concat"] = "mean"
    input_processing: Literal["pooled", "sequence", "flatten", "none"] = "pooled"
    freeze_backbone: bool = True
    online_training: bool = False
    hidden_dims: list[int] = Field(default_factory=lambda: [256])
    dropout_rate: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "elu", "silu", "swish"] = "relu"
    num_heads: int = Field(4, gt=0)
    attention_dim: int | None = Field(None, gt=0)
    num_layers: int = Field(1, gt=0)
    lstm_hidden_size: int = Field(128, gt=0)
    bidirectional: bool = False
    max_sequence_length: int | None = Field(None, gt=0)
    use_positional_encoding: bool = False
    target_length: int | None = Field(None, gt=0)

    @field_validator("target_layers")
    @classmethod
    def _layers_as_list(cls, value: Any) -> list[str | int]:
        if isinstance(value, (str, int)):
            return [value]
        if not value:
            raise ValueError("target_layers must name at least one layer")
        return list(value)


def format_validation_error(err: ValidationError, where: str) -> str:
    """Turn a pydantic error into one readable sentence per problem, naming the offending key."""
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        else:
            parts.append(f"'{loc}': {item['msg']}")
    return f"{where}: " + "; ".join(parts)


def suggest(name: str, candidates: list[str], n: int = 5) -> str:
    """A ' Did you mean: a, b?' suffix listing close matches, or ''."""
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def parse_model_entry(data: dict[str, Any], where: str) -> ModelEntry:
    """Validate a YAML mapping as a :class:`ModelEntry`, with errors that name the bad key."""
    if not isinstance(data, dict) or "model_spec" not in data:
        raise ConfigError(f"{where}: a model YAML needs a top-level 'model_spec' mapping")
    try:
        return ModelEntry.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, where)) from None


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """``yaml.safe_load`` of a file, with a ConfigError naming the file when it is missing or malformed."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory; give the path of a YAML file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {err.start}); save it as UTF-8 YAML") from None
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None


def load_model_entry_yaml(path: str | Path) -> ModelEntry:
    """Read a model YAML file into a :class:`ModelEntry`."""
    return parse_model_entry(read_yaml(path, "model YAML"), str(path))
