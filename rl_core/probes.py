"""Probe heads (linear, mlp, attention, lstm, transformer) and the two builders of the framework's API.

* :func:`build_probe_from_config_offline` returns a head that takes stored embeddings.
* :func:`build_probe_from_config_online` wraps a backbone and a head: it takes audio, captures the configured
  layers with forward hooks (removed after every pass) and trains through the backbone unless it is frozen.

Feature shapes a head accepts (the shapes ``ModelBase.extract_embeddings`` produces):
  (B, D) pooled; (B, T, D) a token sequence; (B, L, T, D) L layers stacked (``aggregation="none"`` with
  several layers), mixed by a learned softmax weight per layer.
Linear and MLP heads mean-pool sequences (``input_processing="flatten"`` flattens ``max_sequence_length``
tokens instead); attention, LSTM and transformer heads read the sequence (a pooled vector is a sequence of 1).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from typing import Any, Mapping

import torch
from torch import nn

from rl_core.configs import ProbeConfig
from rl_core.errors import ConfigError
from rl_core.models.base import ModelBase

log = logging.getLogger(__name__)

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "silu": nn.SiLU, "swish": nn.SiLU,
}
SEQUENCE_PROBES = {"attention", "lstm", "transformer"}


def make_activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ConfigError(f"unknown activation '{name}'; use one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """(length, dim) sinusoidal position codes (Vaswani et al.); odd dims get one extra sine column."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    freqs = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    codes = torch.zeros(length, dim, device=device)
    codes[:, 0::2] = torch.sin(position * freqs)
    codes[:, 1::2] = torch.cos(position * freqs[: dim // 2])
    return codes


class ProbeHead(nn.Module):
    """Shared input handling; subclasses implement :meth:`head_forward` on (B, D_in) or (B, T, D)."""

    def __init__(self, config: ProbeConfig, input_dim: int, num_classes: int, num_input_layers: int = 1) -> None:
        super().__init__()
        if input_dim < 1 or num_classes < 1:
            raise ConfigError(f"input_dim and num_classes must be positive, got {input_dim} and {num_classes}")
        self.config = config
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.num_input_layers = num_input_layers
        # one learned weight per stacked layer; softmax keeps the mix a convex combination
        self.layer_weights = nn.Parameter(torch.zeros(num_input_layers)) if num_input_layers > 1 else None
        self.dropout = nn.Dropout(config.dropout_rate)

    @property
    def wants_sequence(self) -> bool:
        return self.config.probe_type in SEQUENCE_PROBES

    def _mix_layers(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            return x
        if self.layer_weights is None or x.shape[1] != self.num_input_layers:
            raise ConfigError(
                f"probe got {x.shape[1]} stacked layers but was built for {self.num_input_layers}; "
                "pass num_input_layers to build_probe_from_config_offline"
            )
        weights = torch.softmax(self.layer_weights, dim=0).view(1, -1, 1, 1)
        return (x * weights).sum(dim=1)

    def _fit_length(self, x: torch.Tensor, length: int) -> torch.Tensor:
        if x.shape[1] >= length:
            return x[:, :length]
        return nn.functional.pad(x, (0, 0, 0, length - x.shape[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim not in (2, 3, 4):
            raise ConfigError(f"probe input must be (B, D), (B, T, D) or (B, L, T, D); got {tuple(x.shape)}")
        x = self._mix_layers(x)
        if x.shape[-1] != self.input_dim:
            raise ConfigError(f"probe built for {self.input_dim}-d features got {x.shape[-1]}-d input")
        cfg = self.config
        if self.wants_sequence:
            if x.ndim == 2:
                x = x.unsqueeze(1)
            if cfg.max_sequence_length is not None:
                x = x[:, : cfg.max_sequence_length]
        elif x.ndim == 3:
            if cfg.input_processing == "flatten":
                x = self._fit_length(x, cfg.max_sequence_length).flatten(1)  # type: ignore[arg-type]
            else:
                x = x.mean(dim=1)
        elif cfg.input_processing == "flatten":
            # a pooled vector flattened: treat it as one token, padded to max_sequence_length tokens
            x = self._fit_length(x.unsqueeze(1), cfg.max_sequence_length).flatten(1)  # type: ignore[arg-type]
        return self.head_forward(x)

    def head_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _pooled_in_features(self) -> int:
        if self.config.input_processing == "flatten":
            if self.config.max_sequence_length is None:
                raise ConfigError("input_processing='flatten' needs max_sequence_length (tokens kept before flattening)")
            return self.config.max_sequence_length * self.input_dim
        return self.input_dim

    def _model_dim(self) -> int:
        dim = self.config.attention_dim or self.input_dim
        if dim % self.config.num_heads:
            raise ConfigError(
                f"attention_dim {dim} (defaults to the feature size) must be divisible by num_heads "
                f"{self.config.num_heads}"
            )
        return dim


class LinearProbe(ProbeHead):
    def __init__(self, config: ProbeConfig, input_dim: int, num_classes: int, num_input_layers: int = 1) -> None:
        super().__init__(config, input_dim, num_classes, num_input_layers)
        self.classifier = nn.Linear(self._pooled_in_features(), num_classes)

    def head_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)


class MLPProbe(ProbeHead):
    def __init__(self, config: ProbeConfig, input_dim: int, num_classes: int, num_input_layers: int = 1) -> None:
        super().__init__(config, input_dim, num_classes, num_input_layers)
        layers: list[nn.Module] = []
        width = self._pooled_in_features()
        for hidden in config.hidden_dims:
            if hidden < 1:
                raise ConfigError(f"hidden_dims must be positive, got {config.hidden_dims}")
            layers += [nn.Linear(width, hidden), make_activation(config.activation), nn.Dropout(config.dropout_rate)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def head_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


class AttentionProbe(ProbeHead):
    """Attentive pooling: a learned query cross-attends to the tokens, ``num_layers`` times, then a linear layer."""

    def __init__(self, config: ProbeConfig, input_dim: int, num_classes: int, num_input_layers: int = 1) -> None:
        super().__init__(config, input_dim, num_classes, num_input_layers)
        dim = self._model_dim()
        self.project = nn.Linear(input_dim, dim) if dim != input_dim else nn.Identity()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        hidden = config.hidden_dims[0] if config.hidden_dims else 4 * dim
        self.blocks = nn.ModuleList()
        for _ in range(config.num_layers):
            self.blocks.append(nn.ModuleDict({
                "attn": nn.MultiheadAttention(dim, config.num_heads, dropout=config.dropout_rate, batch_first=True),
                "norm1": nn.LayerNorm(dim),
                "ffn": nn.Sequential(nn.Linear(dim, hidden), make_activation(config.activation),
                                     nn.Dropout(config.dropout_rate), nn.Linear(hidden, dim)),
                "norm2": nn.LayerNorm(dim),
            }))
        self.classifier = nn.Linear(dim, num_classes)

    def head_forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.project(x)
        if self.config.use_positional_encoding:
            tokens = tokens + sinusoidal_positions(tokens.shape[1], tokens.shape[2], tokens.device)
        query = self.query.expand(tokens.shape[0], -1, -1)
        for block in self.blocks:
            attended, _ = block["attn"](query, tokens, tokens, need_weights=False)
            query = block["norm1"](query + attended)
            query = block["norm2"](query + block["ffn"](query))
        return self.classifier(self.dropout(query[:, 0]))


class LSTMProbe(ProbeHead):
    """LSTM over the tokens; the last layer's final hidden state (both directions) feeds a linear layer."""

    def __init__(self, config: ProbeConfig, input_dim: int, num_classes: int, num_input_layers: int = 1) -> None:
        super().__init__(config, input_dim, num_classes, num_input_layers)
        dim = config.attention_dim or input_dim  # attention_dim, when set, projects the input first
        self.project = nn.Linear(input_dim, dim) if dim != input_dim else nn.Identity()
        self.lstm = nn.LSTM(dim, config.lstm_hidden_size, num_layers=config.num_layers, batch_first=True,
                            bidirectional=config.bidirectional,
                            dropout=config.dropout_rate if config.num_layers > 1 else 0.0)
        directions = 2 if config.bidirectional else 1
        self.classifier = nn.Linear(config.lstm_hidden_size * directions, num_classes)

    def head_forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.project(x)
        if self.config.use_positional_encoding:
            tokens = tokens + sinusoidal_positions(tokens.shape[1], tokens.shape[2], tokens.device)
        _, (hidden, _) = self.lstm(tokens)
        last = hidden[-2:] if self.config.bidirectional else hidden[-1:]
        return self.classifier(self.dropout(torch.cat(list(last), dim=-1)))


class TransformerProbe(ProbeHead):
    """A small pre-norm transformer encoder over [CLS] + tokens; the CLS output feeds a linear layer."""

    def __init__(self, config: ProbeConfig, input_dim: int, num_classes: int, num_input_layers: int = 1) -> None:
        super().__init__(config, input_dim, num_classes, num_input_layers)
        dim = self._model_dim()
        self.project = nn.Linear(input_dim, dim) if dim != input_dim else nn.Identity()
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        hidden = config.hidden_dims[0] if config.hidden_dims else 4 * dim
        layer = nn.TransformerEncoderLayer(dim, config.num_heads, dim_feedforward=hidden, dropout=config.dropout_rate,
                                           activation=make_activation(config.activation), batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)

    def head_forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.project(x)
        if self.config.use_positional_encoding:
            tokens = tokens + sinusoidal_positions(tokens.shape[1], tokens.shape[2], tokens.device)
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self.classifier(self.dropout(self.norm(self.encoder(tokens)[:, 0])))


PROBE_CLASSES: dict[str, type[ProbeHead]] = {
    "linear": LinearProbe, "mlp": MLPProbe, "attention": AttentionProbe, "lstm": LSTMProbe,
    "transformer": TransformerProbe,
}


def _as_config(probe_config: ProbeConfig | Mapping[str, Any]) -> ProbeConfig:
    if isinstance(probe_config, ProbeConfig):
        return probe_config
    if isinstance(probe_config, Mapping):
        from pydantic import ValidationError

        from rl_core.configs import format_validation_error

        try:
            return ProbeConfig.model_validate(dict(probe_config))
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, "probe_config")) from None
    raise ConfigError(f"probe_config must be a ProbeConfig or a mapping, got {type(probe_config).__name__}")


def build_probe_from_config_offline(
    probe_config: ProbeConfig | Mapping[str, Any],
    input_dim: int,
    num_classes: int,
    device: str | torch.device = "cpu",
    num_input_layers: int | None = None,
) -> ProbeHead:
    """A head trained on stored embeddings of size ``input_dim``.

    ``num_input_layers`` is needed only for stacked (B, L, T, D) inputs; it defaults to the number of
    ``target_layers`` when ``aggregation="none"`` and they are listed explicitly.
    """
    config = _as_config(probe_config)
    if not config.freeze_backbone:
        raise ConfigError("an offline probe trains on stored embeddings, so freeze_backbone must be True; "
                          "use build_probe_from_config_online to fine-tune the backbone")
    if num_input_layers is None:
        layers = config.target_layers
        explicit = "all" not in layers and len(layers) > 1
        num_input_layers = len(layers) if explicit and config.aggregation == "none" else 1
    return PROBE_CLASSES[config.probe_type](config, int(input_dim), int(num_classes), num_input_layers).to(device)


class OnlineProbe(nn.Module):
    """Backbone + probe head taking audio (B, samples). With a frozen backbone only the head is trainable,
    the backbone stays in eval mode and ``state_dict()`` holds only the head (keys ``head.*``)."""

    def __init__(self, backbone: ModelBase, config: ProbeConfig, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.freeze_backbone = config.freeze_backbone
        selectors = ["last_layer" if t == "backbone" else t for t in config.target_layers]
        if "all" in selectors:
            if len(selectors) > 1:
                raise ConfigError("target_layers: 'all' cannot be combined with other layers")
            selectors = "all"
        self.layer_names = backbone._select_layers(selectors)
        if self.freeze_backbone:
            for param in backbone.parameters():
                param.requires_grad_(False)
        elif not any(p.requires_grad for p in backbone.parameters()):
            raise ConfigError(f"{type(backbone).__name__} has no trainable torch parameters (e.g. a LiteRT graph), so "
                              "it cannot be fine-tuned: set freeze_backbone=True")
        self.head: ProbeHead | None = None
        with torch.no_grad():
            probe_input = self.features(torch.zeros(1, self._dry_run_samples(), device=backbone.device))
        dim = probe_input.shape[-1]
        layers = probe_input.shape[1] if probe_input.ndim == 4 else 1
        self.head = PROBE_CLASSES[config.probe_type](config, dim, num_classes, layers)
        self.train(True)

    def _dry_run_samples(self) -> int:
        return self.config.target_length or self.backbone.window_samples

    def train(self, mode: bool = True) -> "OnlineProbe":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # frozen: keep dropout/batch-norm statistics of the backbone fixed
        return self

    def _layer_tokens(self, audio: torch.Tensor) -> list[torch.Tensor]:
        """(B, T, D) tokens of every selected layer; hooks are removed even when the pass fails."""
        backbone = self.backbone
        if not self.layer_names:
            return [backbone._as_tokens(backbone.forward_features(audio))]
        captured = backbone.capture_layer_tokens(self.layer_names, lambda: backbone.forward_features(audio))
        return [captured[name] for name in self.layer_names]

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """What the head sees for a batch of audio, following ``aggregation``."""
        x = self.backbone.prepare_input(audio)
        if self.config.target_length is not None:
            length = self.config.target_length
            x = x[:, :length] if x.shape[1] >= length else nn.functional.pad(x, (0, length - x.shape[1]))
        grad = contextlib.nullcontext() if not self.freeze_backbone and torch.is_grad_enabled() else torch.no_grad()
        with grad:
            tokens = self._layer_tokens(x)
        aggregation = self.config.aggregation
        if aggregation in ("none", "concat"):
            lengths = {t.shape[1] for t in tokens}
            if len(tokens) > 1 and len(lengths) > 1:
                raise ConfigError(f"layers {self.layer_names} have different token counts {sorted(lengths)}; "
                                  "use aggregation 'mean' or 'max' to combine them")
            if len(tokens) == 1:
                return tokens[0]
            if aggregation == "concat":
                return torch.cat(tokens, dim=-1)  # (B, T, sum D)
            dims = {t.shape[2] for t in tokens}
            if len(dims) > 1:
                raise ConfigError(f"layers {self.layer_names} have different widths {sorted(dims)}; "
                                  "use aggregation 'concat' or 'mean' to combine them")
            return torch.stack(tokens, dim=1)  # (B, L, T, D), mixed by the head's layer weights
        pooled = [self.backbone._aggregate(t, aggregation) for t in tokens]
        return pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=-1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        assert self.head is not None
        return self.head(self.features(audio))

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        if args:
            raise TypeError("OnlineProbe.state_dict takes keyword arguments only")
        if not self.freeze_backbone:
            return super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        assert self.head is not None
        if destination is None:
            destination = OrderedDict()
        return self.head.state_dict(destination=destination, prefix=f"{prefix}head.", keep_vars=keep_vars)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        if not self.freeze_backbone:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        assert self.head is not None
        stray = [k for k in state_dict if not k.startswith("head.")]
        if stray and strict:
            raise ConfigError(f"frozen-backbone probe state_dict holds only 'head.*' keys; got {stray[:3]}")
        head_state = {k[len("head."):]: v for k, v in state_dict.items() if k.startswith("head.")}
        return self.head.load_state_dict(head_state, strict=strict, assign=assign)


def build_probe_from_config_online(
    probe_config: ProbeConfig | Mapping[str, Any],
    base_model: ModelBase,
    num_classes: int,
    device: str | torch.device = "cpu",
) -> OnlineProbe:
    """Backbone + head that takes audio; trains through the backbone when ``freeze_backbone`` is False."""
    config = _as_config(probe_config)
    if not isinstance(base_model, ModelBase):
        raise ConfigError(f"base_model must be an rl_core ModelBase, got {type(base_model).__name__}")
    device = torch.device(device)
    if base_model.device != device:
        base_model.move_to(device)
    return OnlineProbe(base_model, config, int(num_classes)).to(device)
